//! What happens to a networking.k8s.io/v1 Ingress (SPEC §6, §7). Not yet implemented (issue 3).

use serde_json::Value;

use super::{Findings, Subject};
use crate::settings::Settings;

pub fn mutate(_subject: &Subject<'_>, _object: &mut Value, _settings: &Settings, _findings: &mut Findings) {}

pub fn validate(_subject: &Subject<'_>, _settings: &Settings, _findings: &mut Findings) {}
