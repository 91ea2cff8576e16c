//! `divert-webhook certs`: a CA and a serving certificate for `<service>.<namespace>.svc`, for
//! installs without cert-manager (deploy/overlays/self-managed). Pure: makes the PEMs and the
//! Secret manifest; the CLI writes them.

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the serving certificate it signed, in PEM.
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The names the serving certificate is valid for.
    pub dns_names: Vec<String>,
}

/// The names the apiserver dials for a webhook Service: `<service>.<namespace>.svc`, and the
/// same under the cluster domain.
pub fn dns_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    let svc = format!("{service}.{namespace}.svc");
    vec![svc.clone(), format!("{svc}.{cluster_domain}")]
}

/// Makes a CA valid for `ca_days` and a serving certificate (ECDSA P-256) valid for `days`,
/// signed by it, for `dns_names`.
pub fn issue(dns_names: Vec<String>, days: u32, ca_days: u32) -> Result<Issued, String> {
    let failed = |e: rcgen::Error| format!("making the certificates: {e}");
    let now = time::OffsetDateTime::now_utc();
    // An hour back, so that a node whose clock is a little behind accepts it at once.
    let not_before = now - time::Duration::hours(1);

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "divert-webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca_params.not_before, ca_params.not_after) = (not_before, now + time::Duration::days(ca_days.into()));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(failed)?).map_err(failed)?;

    let mut params = CertificateParams::new(dns_names.clone()).map_err(failed)?;
    params.distinguished_name.push(DnType::CommonName, &dns_names[0]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = (not_before, now + time::Duration::days(days.into()));
    let key = KeyPair::generate().map_err(failed)?;
    let cert = params.signed_by(&key, &ca).map_err(failed)?;
    Ok(Issued { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem(), dns_names })
}

/// The webhook configurations' `caBundle`: the CA's PEM, base64.
pub fn ca_bundle(issued: &Issued) -> String {
    base64::engine::general_purpose::STANDARD.encode(&issued.ca_pem)
}

/// A `kubernetes.io/tls` Secret holding the pair and the CA (`ca.crt`, from which
/// deploy/overlays/self-managed fills caBundle).
pub fn secret_manifest(issued: &Issued, name: &str, namespace: &str) -> String {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    format!(
        "# Written by `divert-webhook certs` for {names}. Holds a private key: keep it out of git.\n\
         apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {name}\n  namespace: {namespace}\n\
         type: kubernetes.io/tls\n\
         data:\n  tls.crt: {cert}\n  tls.key: {key}\n  ca.crt: {ca}\n",
        names = issued.dns_names.join(", "),
        cert = b64(&issued.cert_pem),
        key = b64(&issued.key_pem),
        ca = b64(&issued.ca_pem),
    )
}
