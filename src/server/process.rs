//! The standard `process_*` metrics (as the Go and Python clients name them), read from /proc at
//! scrape time: nothing is kept or updated between scrapes. prometheus-client has no collector
//! for them. On a system without /proc the metrics are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub struct ProcessCollector;

/// What /proc says about this process.
#[derive(Debug, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        parse(&stat, boot_time, open_fds, &limits, ticks.max(1) as f64, page.max(1) as u64)
    }
}

/// From the text of /proc/self/stat (fields after the command name, which may hold spaces and
/// parentheses, so it is skipped up to its last `)`), /proc/stat's btime and /proc/self/limits.
fn parse(stat: &str, boot_time: u64, open_fds: u64, limits: &str, ticks: f64, page: u64) -> Option<ProcessStats> {
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 of proc(5) (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu_ticks = field(14)? + field(15)?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok());
    Some(ProcessStats {
        cpu_seconds: cpu_ticks as f64 / ticks,
        resident_bytes: field(24)? * page,
        virtual_bytes: field(23)?,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
        open_fds,
        max_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else { return Ok(()) };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", stats.resident_bytes as f64),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", stats.virtual_bytes as f64),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                stats.start_time_seconds,
            ),
            ("process_open_fds", "Number of open file descriptors", stats.open_fds as f64),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if let Some(max) = stats.max_fds {
            let gauge = ConstGauge::new(max as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as a process may choose.
        let stat = "4242 (div ert) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 12345 \
                    104857600 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1048576              1048576              files     \n";
        let stats = parse(stat, 1_700_000_000, 12, limits, 100.0, 4096).unwrap();
        assert_eq!(
            stats,
            ProcessStats {
                cpu_seconds: 3.0,
                resident_bytes: 2048 * 4096,
                virtual_bytes: 104_857_600,
                start_time_seconds: 1_700_000_123.45,
                open_fds: 12,
                max_fds: Some(1_048_576),
            }
        );
        assert_eq!(parse("garbage", 0, 0, "", 100.0, 4096), None);
    }
}
