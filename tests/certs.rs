//! `divert-webhook certs` (deploy/overlays/self-managed): the certificate it makes is served by
//! the real server and verifies, against the CA it prints as caBundle, for the names the
//! apiserver dials and for no other; the Secret holds the same pair; files are not overwritten
//! unless asked. (tests/deploy_manifests.rs applies its Secret to the overlay.)

mod common;

use std::process::{Command, Output};
use std::sync::Arc;

use base64::Engine as _;
use common::{TestServer, client_tls, serve_args};
use rustls::pki_types::ServerName;
use serde_json::Value;

fn certs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_divert-webhook")).arg("certs").args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A TLS handshake with the server at `addr` as a client that dials `name` and trusts `ca_pem`.
async fn handshake(addr: std::net::SocketAddr, ca_pem: &str, name: &str) -> std::io::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let config = client_tls(ca_pem, &[b"http/1.1"], None);
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map(drop)
}

#[tokio::test]
async fn the_certificate_verifies_for_the_service_names_against_the_printed_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("pem");
    let secret = dir.path().join("secret.yaml");
    let out = certs(&[
        "--namespace",
        "team-hooks",
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--secret",
        secret.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ca_pem = std::fs::read_to_string(out_dir.join("ca.crt")).unwrap();
    let ca_bundle = text(&out.stdout).trim().to_string();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(&ca_bundle).unwrap(), ca_pem.as_bytes());
    assert!(text(&out.stderr).contains("divert-webhook.team-hooks.svc"), "{}", text(&out.stderr));

    // The Secret holds the very files, base64, and the CA as ca.crt.
    let manifest: Value = serde_saphyr::from_str(&std::fs::read_to_string(&secret).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "Secret");
    assert_eq!(manifest["type"], "kubernetes.io/tls");
    assert_eq!(manifest["metadata"]["name"], "divert-webhook-tls");
    assert_eq!(manifest["metadata"]["namespace"], "team-hooks");
    for (key, file) in [("tls.crt", "tls.crt"), ("tls.key", "tls.key"), ("ca.crt", "ca.crt")] {
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(manifest["data"][key].as_str().unwrap()).unwrap();
        assert_eq!(decoded, std::fs::read(out_dir.join(file)).unwrap(), "{key}");
    }
    #[cfg(unix)]
    for private in [out_dir.join("tls.key"), secret.clone()] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", private.display());
    }

    // The real server serves the pair; a client trusting only the printed CA accepts it for the
    // names the apiserver dials, and refuses it for any other.
    let args = serve_args(&[
        "--tls-cert",
        out_dir.join("tls.crt").to_str().unwrap(),
        "--tls-key",
        out_dir.join("tls.key").to_str().unwrap(),
    ]);
    let server = TestServer::start(args).await;
    for name in ["divert-webhook.team-hooks.svc", "divert-webhook.team-hooks.svc.cluster.local"] {
        handshake(server.https, &ca_pem, name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in ["divert-webhook.divert-system.svc", "other.team-hooks.svc", "localhost"] {
        assert!(handshake(server.https, &ca_pem, name).await.is_err(), "accepted for {name}");
    }
    // And nobody else's CA verifies it.
    let stranger = common::Pki::new("someone else");
    assert!(handshake(server.https, &stranger.ca_pem(), "divert-webhook.team-hooks.svc").await.is_err());
    server.stop().await;
}

#[test]
fn existing_files_are_kept_unless_forced_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.yaml");
    assert!(certs(&["--secret", secret.to_str().unwrap()]).status.success());
    let first = std::fs::read_to_string(&secret).unwrap();
    let out = certs(&["--secret", secret.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("exists; nothing written (--force replaces it)"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), first);
    assert!(certs(&["--secret", secret.to_str().unwrap(), "--force"]).status.success());
    assert_ne!(std::fs::read_to_string(&secret).unwrap(), first, "a new CA and certificate");

    let out = certs(&["--namespace", "Team_Hooks", "--secret", dir.path().join("x.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--namespace \"Team_Hooks\" is not a DNS-1123 label"), "{}", text(&out.stderr));
    // Somewhere to write is required.
    let out = certs(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--secret") && text(&out.stderr).contains("--out-dir"), "{}", text(&out.stderr));
}
