//! The GET floor (`--mode get-floor --listen 127.0.0.1:PORT`): a bare hyper HTTP/1.1 server
//! that answers fixed bytes — the status, headers and body lainlet answers for each of the
//! `--get-path` views with its built-in demo data (`lainlet --demo`), rendered once at start
//! ([`crate::render::demo_get`]) — on a tokio runtime shaped like lainlet's (multi-threaded,
//! one worker per core). Whatever a GET on lainlet costs beyond this is lainlet's own: the
//! engine lookup, the request sniffing, the connection bookkeeping.
//!
//! It serves until killed (SIGINT/SIGTERM) or `--max-secs`. Measure it with `wrk` like
//! lainlet (BENCHMARKS.md).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// The views served by default: the small one and a large one.
pub const DEFAULT_PATHS: [&str; 2] = ["/v2/configwatcher?target=vip", "/v2/coreinfowatcher"];

/// One fixed answer.
struct View {
    target: String,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

/// Renders the answers of `paths`, then serves them on `listen` for at most `limit`.
pub fn run(listen: SocketAddr, paths: &[String], limit: Duration) -> anyhow::Result<()> {
    let mut views = Vec::new();
    for p in paths {
        let r = crate::render::demo_get(p);
        if r.status != 200 {
            bail!(
                "--get-path {p}: lainlet answers {} with the demo data: {}",
                r.status,
                String::from_utf8_lossy(&r.body).trim()
            );
        }
        let mut headers = Vec::new();
        for (name, value) in r.headers() {
            let name = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("header name {name:?}"))?;
            let value =
                HeaderValue::from_str(value).with_context(|| format!("header value {value:?}"))?;
            headers.push((name, value));
        }
        headers.push((CONTENT_LENGTH, HeaderValue::from(r.body.len())));
        println!("{p}: {} body bytes", r.body.len());
        views.push(View {
            target: p.clone(),
            status: StatusCode::OK,
            headers,
            body: r.body,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(serve(listen, Arc::new(views), limit));
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn serve(listen: SocketAddr, views: Arc<Vec<View>>, limit: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!(
        "get-floor: serving {} views on http://{} for at most {limit:?}",
        views.len(),
        listener.local_addr()?
    );
    let mut term = signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // e.g. out of file descriptors: keep serving the open connections
                    eprintln!("get-floor: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            () = &mut deadline => break,
        };
        let views = views.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                std::future::ready(Ok::<_, Infallible>(answer(&views, target)))
            });
            let _ = http1::Builder::new()
                .title_case_headers(true)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
    Ok(())
}

fn answer(views: &[View], target: &str) -> Response<Full<Bytes>> {
    let Some(view) = views.iter().find(|v| v.target == target) else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"404 not found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let mut r = Response::new(Full::new(view.body.clone()));
    *r.status_mut() = view.status;
    let headers = r.headers_mut();
    for (name, value) in &view.headers {
        headers.insert(name.clone(), value.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_lainlets_headers_and_body() {
        let r = crate::render::demo_get(DEFAULT_PATHS[0]);
        let views = vec![View {
            target: DEFAULT_PATHS[0].into(),
            status: StatusCode::OK,
            headers: vec![
                (
                    HeaderName::from_bytes(b"Content-Type").unwrap(),
                    HeaderValue::from_static(r.content_type),
                ),
                (CONTENT_LENGTH, HeaderValue::from(r.body.len())),
            ],
            body: r.body.clone(),
        }];
        let ok = answer(&views, DEFAULT_PATHS[0]);
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(ok.headers()["content-length"], r.body.len().to_string());
        assert_eq!(answer(&views, "/v2/other").status(), 404);
    }
}
