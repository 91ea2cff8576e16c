//! SPEC §4: divert routes of a shared VirtualService. (Being built: issue 3.)

use serde_json::Value;

use crate::rules::{Findings, Subject};
use crate::settings::Settings;

pub fn mutate(_subject: &Subject<'_>, _object: &mut Value, _settings: &Settings, _findings: &mut Findings) {}
