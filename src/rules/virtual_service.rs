//! What happens to an Istio VirtualService (SPEC §4, §5, §7). Not yet implemented (issue 3).

use serde_json::Value;

use super::{Findings, Subject};
use crate::settings::Settings;

pub fn mutate(_subject: &Subject<'_>, _object: &mut Value, _settings: &Settings, _findings: &mut Findings) {}

pub fn validate(_subject: &Subject<'_>, _settings: &Settings, _findings: &mut Findings) {}
