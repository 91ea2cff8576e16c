//! SPEC §7: validation of VirtualServices. (Being built: issue 3.)

use crate::rules::{Findings, Subject};
use crate::settings::Settings;

pub fn validate(_subject: &Subject<'_>, _settings: &Settings, _findings: &mut Findings) {}
