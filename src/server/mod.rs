//! `divert-webhook serve`: the HTTPS admission server and the plain-HTTP metrics port.
//! (Being built: issue 2.)

use crate::settings::Settings;

/// Flags of `serve` only; the rule flags are shared with the offline commands (see `cli`).
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address of the HTTPS admission endpoints.
    #[arg(long, env = "DIVERT_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub addr: std::net::SocketAddr,
}

pub async fn serve(_args: ServeArgs, _settings: Settings) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Err("serve is not built yet".into())
}
