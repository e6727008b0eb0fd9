//! A reply that is already encoded: what a server sends when one encoding is shared by many
//! callers (every watcher of the same view state gets the same bytes, built once).

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{encode_key, skip_field, DecodeContext, WireType};
use prost::{DecodeError, Message};

/// The protobuf encoding of a reply message, sent as it is.
///
/// A protobuf message is the concatenation of its encoded fields, so writing these bytes is
/// writing the message: a server can declare every view-backed rpc's reply as `EncodedReply`
/// (tonic-build's `extern_path(".message.CoreinfoReply", "::lainlet_grpc::EncodedReply")`)
/// and hand out a shared buffer instead of re-encoding a message per caller. Clients see the
/// reply type of the schema; nothing on the wire differs.
///
/// Decoding keeps every field's bytes verbatim (unknown to this type, but not lost), so
/// decoding an `EncodedReply` and encoding it again gives the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedReply(pub Bytes);

impl EncodedReply {
    /// The encoded message.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Decodes the bytes as the reply type `M` (for tests and clients; a server never needs
    /// to).
    pub fn decode_as<M: Message + Default>(&self) -> Result<M, DecodeError> {
        M::decode(self.0.as_ref())
    }
}

impl From<Vec<u8>> for EncodedReply {
    fn from(bytes: Vec<u8>) -> Self {
        EncodedReply(Bytes::from(bytes))
    }
}

impl Message for EncodedReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut field = Vec::with_capacity(16);
        encode_key(tag, wire_type, &mut field);
        skip_field(
            wire_type,
            tag,
            &mut Recording {
                inner: buf,
                out: &mut field,
            },
            ctx,
        )?;
        let mut all = Vec::with_capacity(self.0.len() + field.len());
        all.extend_from_slice(&self.0);
        all.extend_from_slice(&field);
        self.0 = Bytes::from(all);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// A [`Buf`] that copies every byte it is advanced over into `out`.
struct Recording<'a, B> {
    inner: &'a mut B,
    out: &'a mut Vec<u8>,
}

impl<B: Buf> Buf for Recording<'_, B> {
    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.inner.chunk()
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let chunk = self.inner.chunk();
            let n = chunk.len().min(cnt);
            if n == 0 {
                // Past the end: let the inner buffer report it as it does.
                self.inner.advance(cnt);
                return;
            }
            self.out.extend_from_slice(&chunk[..n]);
            self.inner.advance(n);
            cnt -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ConfigReply, NodeInfo, NodesReply};

    #[test]
    fn an_encoded_reply_writes_exactly_the_messages_bytes() {
        let reply = ConfigReply {
            data: [("vip".to_owned(), "192.168.77.201".to_owned())].into(),
        };
        let encoded = EncodedReply::from(reply.encode_to_vec());
        assert_eq!(encoded.encode_to_vec(), reply.encode_to_vec());
        assert_eq!(encoded.encoded_len(), reply.encoded_len());
        assert_eq!(encoded.decode_as::<ConfigReply>().unwrap(), reply);
        // The length-delimited form (what a nested field would carry) is the message's too.
        assert_eq!(
            encoded.encode_length_delimited_to_vec(),
            reply.encode_length_delimited_to_vec()
        );
    }

    #[test]
    fn decoding_keeps_every_field_verbatim() {
        let mut node = NodeInfo::default();
        node.v.insert(
            "ssh_port".into(),
            crate::message::node_info::Value {
                vtype: 0,
                sval: "22".into(),
                mval: Default::default(),
            },
        );
        let reply = NodesReply {
            data: [("node1:192.168.77.21:22".to_owned(), node)].into(),
        };
        let bytes = reply.encode_to_vec();
        let decoded = EncodedReply::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.0.as_ref(), bytes.as_slice());
        let mut cleared = decoded.clone();
        cleared.clear();
        assert_eq!(cleared.encoded_len(), 0);
    }

    #[test]
    fn a_truncated_field_is_a_decode_error_not_a_panic() {
        let bytes = ConfigReply {
            data: [("k".to_owned(), "v".repeat(40))].into(),
        }
        .encode_to_vec();
        for cut in 1..bytes.len() {
            assert!(EncodedReply::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
