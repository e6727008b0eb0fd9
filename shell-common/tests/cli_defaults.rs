//! The command line's safe defaults: `-etcd` is required unless `--demo`, the log format, and
//! what the engine is told about etcd.

use std::ffi::OsString;

use clap::Parser;
use lainlet_shell_common::cli::normalise;
use lainlet_shell_common::{Cli, LogFormat};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(normalise(args.iter().map(OsString::from)))
}

#[test]
fn without_etcd_and_demo_the_usage_is_the_answer() {
    let cli = parse(&["lainlet", "-web=:9001"]).unwrap();
    let message = cli.check_etcd("lainlet").unwrap_err();
    assert!(message.contains("-etcd is required"), "{message}");
    assert!(message.contains("Usage: lainlet"), "{message}");
    assert!(message.contains("--demo"), "{message}");
    let empty = parse(&["lainlet", "-etcd="]).unwrap();
    assert!(empty
        .check_etcd("lainlet-smol")
        .unwrap_err()
        .contains("Usage: lainlet-smol"));
}

#[test]
fn demo_or_etcd_is_enough_but_not_both() {
    let demo = parse(&["lainlet", "--demo"]).unwrap();
    assert!(demo.demo);
    assert_eq!(demo.check_etcd("lainlet"), Ok(()));
    assert!(demo.etcd_endpoints().is_empty());
    let etcd = parse(&["lainlet", "-etcd=10.0.0.1:4001,10.0.0.2:4001"]).unwrap();
    assert_eq!(etcd.check_etcd("lainlet"), Ok(()));
    assert_eq!(
        etcd.engine_config().etcd_urls,
        ["http://10.0.0.1:4001", "http://10.0.0.2:4001"]
    );
    let both = parse(&["lainlet", "--demo", "--etcd", "10.0.0.1:4001"]).unwrap_err();
    assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn logs_are_text_unless_json_is_asked_for() {
    assert_eq!(parse(&["lainlet"]).unwrap().log_format, LogFormat::Text);
    let json = parse(&["lainlet", "--log-format", "json"]).unwrap();
    assert_eq!(json.log_format, LogFormat::Json);
    assert_eq!(
        parse(&["lainlet", "--log-format=text"]).unwrap().log_format,
        LogFormat::Text
    );
    assert!(parse(&["lainlet", "--log-format", "xml"]).is_err());
}
