//! The machine a bench ran on, printed first so a pasted table says where it came from.
#![allow(dead_code)]

/// Prints the CPU model (from `/proc/cpuinfo`), the cores this process may use, and the
/// load average at the start: numbers from a shared or different machine are not comparable.
pub fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "machine: {model}, {cores} core(s) available, load average {}",
        if load.is_empty() {
            "unknown".to_owned()
        } else {
            load.join(" ")
        }
    );
}
