//! What the kernel says about a process: CPU time (`/proc/PID/stat`, user
//! plus system, every thread including those that have exited) and peak
//! resident memory (`VmHWM` in `/proc/PID/status`, resettable through
//! `/proc/PID/clear_refs`).

/// Clock ticks per second of `/proc/PID/stat`: `USER_HZ`, which Linux fixes
/// at 100 for user space on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds `pid` has used so far, or `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count the
    // fields after its closing parenthesis. utime and stime are fields 14
    // and 15, so the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// The highest resident set size of `pid` since it started or since the
/// last [`reset_peak_rss`], in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Makes `pid`'s peak RSS its current RSS (Linux 4.0+), so that a run's
/// peak is its own and not that of the runs before it. False when the
/// kernel refused: the peak then covers the process's life.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `/proc/loadavg`'s first three fields: the machine's load over 1, 5 and
/// 15 minutes.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The CPU's model name and the number of cores the kernel shows.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kib: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!(", {} GiB", kib / (1 << 20)))
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores{memory}, Linux {}", kernel.trim())
}
