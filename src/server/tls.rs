//! TLS for the admission port: TLS 1.2/1.3 with the ring provider, the serving certificate
//! (from files that are re-read when they change, or made at start with --self-signed), and
//! optional client-certificate verification.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::metrics::Metrics;
use super::{Error, ServeArgs};

/// The one crypto provider, passed explicitly everywhere (never the process default).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate handed to every new handshake; swapped in place on reload.
#[derive(Debug)]
struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A usable certificate + key, with what the logs and metrics say about it.
struct LoadedCert {
    key: Arc<CertifiedKey>,
    not_after: i64,
    description: String,
}

/// --tls-cert / --tls-key and their contents when last read (or why reading failed).
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

type FileContents = Result<(Vec<u8>, Vec<u8>), String>;

impl CertFiles {
    /// The pair as it is on disk, or None while it is being replaced: the two files are read
    /// one after the other, so a swap in between would mix two generations (a spurious failure).
    async fn read_settled(&self) -> Option<FileContents> {
        let first = self.read().await;
        (self.read().await == first).then_some(first)
    }

    async fn read(&self) -> FileContents {
        let cert =
            tokio::fs::read(&self.cert).await.map_err(|e| format!("reading --tls-cert {}: {e}", self.cert.display()));
        let key =
            tokio::fs::read(&self.key).await.map_err(|e| format!("reading --tls-key {}: {e}", self.key.display()));
        Ok((cert?, key?))
    }

    fn load(&self, (cert_pem, key_pem): &(Vec<u8>, Vec<u8>)) -> Result<LoadedCert, String> {
        load_pair(cert_pem, key_pem, &self.cert, &self.key)
    }
}

pub struct Tls {
    config: Arc<ServerConfig>,
    resolver: Arc<CertResolver>,
    /// Set when the certificate comes from files (then they are watched), with their contents.
    files: Option<(CertFiles, FileContents)>,
}

impl Tls {
    /// Loads --tls-cert/--tls-key or makes the --self-signed certificate, and --client-ca.
    pub fn from_args(args: &ServeArgs, metrics: &Metrics) -> Result<Tls, Error> {
        let (loaded, files) = match (&args.tls_cert, &args.tls_key, args.self_signed) {
            (Some(cert), Some(key), false) => {
                if args.write_ca.is_some() {
                    return Err(
                        "--write-ca writes the CA of --self-signed; with --tls-cert the CA is yours already".into()
                    );
                }
                let files = CertFiles { cert: cert.clone(), key: key.clone() };
                let contents = std::fs::read(cert)
                    .map_err(|e| format!("reading --tls-cert {}: {e}", cert.display()))
                    .and_then(|c| {
                    Ok((c, std::fs::read(key).map_err(|e| format!("reading --tls-key {}: {e}", key.display()))?))
                })?;
                (files.load(&contents)?, Some((files, Ok(contents))))
            }
            (None, None, true) => {
                let (loaded, ca_pem) = self_signed()?;
                if let Some(path) = &args.write_ca {
                    std::fs::write(path, ca_pem).map_err(|e| format!("writing --write-ca {}: {e}", path.display()))?;
                }
                (loaded, None)
            }
            (Some(_), None, false) => {
                return Err("--tls-cert needs --tls-key (the PEM private key of the certificate)".into());
            }
            (None, Some(_), false) => return Err("--tls-key needs --tls-cert (the PEM certificate of the key)".into()),
            (None, None, false) => {
                return Err(
                    "no serving certificate: give --tls-cert and --tls-key (PEM files), or --self-signed".into()
                );
            }
            (_, _, true) => return Err("give either --tls-cert/--tls-key or --self-signed, not both".into()),
        };
        tracing::info!(certificate = %loaded.description, "serving certificate loaded");
        metrics.set_certificate_expiry(loaded.not_after);
        let resolver = Arc::new(CertResolver { current: RwLock::new(loaded.key) });
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match &args.client_ca {
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // No session resumption: every new connection gets the current certificate right after
        // a rotation. The apiserver keeps connections alive, so resumption would save little.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Tls { config: Arc::new(config), resolver, files })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// Polls the certificate files every `interval` and swaps in a changed, valid pair. A pair
    /// that does not load keeps the previous certificate and counts one failed reload per
    /// distinct content seen. None for --self-signed (nothing to watch).
    pub fn watch_files(&self, interval: Duration, metrics: Arc<Metrics>) -> Option<tokio::task::JoinHandle<()>> {
        let (files, initial) = self.files.as_ref()?;
        let files = CertFiles { cert: files.cert.clone(), key: files.key.clone() };
        let mut last_seen = initial.clone();
        let resolver = self.resolver.clone();
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(contents) = files.read_settled().await else { continue };
                if contents == last_seen {
                    continue;
                }
                match contents.as_ref().map_err(String::clone).and_then(|c| files.load(c)) {
                    Ok(loaded) => {
                        resolver.replace(loaded.key);
                        metrics.set_certificate_expiry(loaded.not_after);
                        metrics.certificate_reloaded(true);
                        tracing::info!(certificate = %loaded.description, "serving certificate reloaded");
                    }
                    Err(error) => {
                        metrics.certificate_reloaded(false);
                        tracing::warn!(%error, "certificate reload failed; still serving the previous certificate");
                    }
                }
                last_seen = contents;
            }
        }))
    }
}

/// Parses a PEM certificate chain and private key and checks that they belong together.
fn load_pair(cert_pem: &[u8], key_pem: &[u8], cert_path: &Path, key_path: &Path) -> Result<LoadedCert, String> {
    let (cert_path, key_path) = (cert_path.display(), key_path.display());
    let chain = pem_certificates(cert_pem).map_err(|e| format!("--tls-cert {cert_path}: {e}"))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("--tls-key {key_path}: not readable PEM ({e})"))?
        .ok_or_else(|| {
            format!(
                "--tls-key {key_path}: no private key found; give a PEM key (BEGIN PRIVATE KEY, RSA or EC PRIVATE KEY)"
            )
        })?;
    let leaf = chain[0].clone();
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "--tls-key {key_path} is not the key of the certificate in --tls-cert {cert_path}: give the matching pair"
        ),
        other => format!("--tls-cert {cert_path} / --tls-key {key_path}: unusable: {other}"),
    })?;
    let (not_after, description) = describe(&leaf).map_err(|e| format!("--tls-cert {cert_path}: {e}"))?;
    Ok(LoadedCert { key: Arc::new(key), not_after, description })
}

fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not readable PEM ({e})"))?;
    if chain.is_empty() {
        return Err("no certificate found; give PEM (BEGIN CERTIFICATE), the serving certificate first".into());
    }
    Ok(chain)
}

/// The leaf's expiry (unix seconds) and a one-line description for the logs.
fn describe(leaf: &CertificateDer<'_>) -> Result<(i64, String), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| format!("not a valid X.509 certificate ({e})"))?;
    let not_after = cert.validity().not_after;
    Ok((
        not_after.timestamp(),
        format!("subject {}, serial {}, expires {}", cert.subject(), cert.raw_serial_as_string(), not_after),
    ))
}

/// Requires client certificates chaining to a CA of the --client-ca bundle.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("reading --client-ca {shown}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(&pem).map_err(|e| format!("--client-ca {shown}: {e}"))? {
        roots.add(cert).map_err(|e| format!("--client-ca {shown}: unusable CA certificate ({e})"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("--client-ca {shown}: {e}"))
}

/// A throwaway CA and a certificate for `localhost` and `127.0.0.1` signed by it, valid for a
/// year. Returns the serving certificate and the CA's PEM (what --write-ca writes).
fn self_signed() -> Result<(LoadedCert, String), String> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let failed = |e: rcgen::Error| format!("making the --self-signed certificate: {e}");
    let now = time::OffsetDateTime::now_utc();
    let (not_before, not_after) = (now - time::Duration::hours(1), now + time::Duration::days(365));

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "divert-webhook self-signed CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca_params.not_before, ca_params.not_after) = (not_before, not_after);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(failed)?).map_err(failed)?;

    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(failed)?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = (not_before, not_after);
    let key = KeyPair::generate().map_err(failed)?;
    let cert = params.signed_by(&key, &ca).map_err(failed)?;

    let leaf = cert.der().clone();
    let certified =
        CertifiedKey::from_der(vec![leaf.clone()], PrivateKeyDer::Pkcs8(key.serialize_der().into()), &provider())
            .map_err(|e| format!("loading the --self-signed certificate: {e}"))?;
    let (not_after, description) = describe(&leaf)?;
    Ok((LoadedCert { key: Arc::new(certified), not_after, description }, ca.pem()))
}
