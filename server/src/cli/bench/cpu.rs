//! CPU time per event: the load tool's own (it is the SDK users run) and,
//! with `--server-pid`, the server's, read from `/proc/<pid>/stat` (user +
//! system time of every thread, in clock ticks) before and after a phase.

use std::time::Duration;

/// CPU time used so far by this process and, when given, the server.
#[derive(Clone, Copy)]
pub(crate) struct CpuMark {
    client: Option<Duration>,
    server: Option<Duration>,
}

/// CPU used over a phase, in µs per event.
#[derive(Clone, Copy, Default)]
pub(crate) struct CpuPerEvent {
    pub client_us: Option<f64>,
    pub server_us: Option<f64>,
}

impl CpuMark {
    pub fn now(server_pid: Option<u32>) -> CpuMark {
        CpuMark {
            client: cpu_time("self"),
            server: server_pid.and_then(|pid| cpu_time(&pid.to_string())),
        }
    }

    /// CPU used since `self`, per event of `events`.
    pub fn per_event(&self, server_pid: Option<u32>, events: u64) -> CpuPerEvent {
        let later = CpuMark::now(server_pid);
        let per = |before: Option<Duration>, after: Option<Duration>| {
            let used = after?.checked_sub(before?)?;
            (events > 0).then(|| (used.as_secs_f64() * 1e6 / events as f64 * 100.0).round() / 100.0)
        };
        CpuPerEvent {
            client_us: per(self.client, later.client),
            server_us: per(self.server, later.server),
        }
    }
}

/// utime + stime of `/proc/<pid>/stat`, or `None` off Linux or when the
/// process is gone.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; count from its ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // Fields 14 and 15 of proc(5); index 0 here is field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = rustix::param::clock_ticks_per_second();
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_read_and_grows() {
        let before = cpu_time("self").expect("/proc/self/stat");
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(cpu_time("self").expect("again") > before);
    }
}
