//! What the generator reads from /proc about a process (itself or `serve`): CPU ticks, and
//! the datagrams the kernel dropped on that process's full UDP receive buffers (summed over
//! the sockets it has open: the loss that happened because it could not keep up).

use std::collections::HashSet;

/// User + system ticks from the text of /proc/PID/stat (fields 14 and 15; the command name
/// in parentheses may hold spaces).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds of a process.
pub fn cpu_seconds(pid: u32, clk_tck: f64) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| format!("/proc/{pid}/stat: unparsable"))?;
    Ok(ticks as f64 / clk_tck)
}

/// Socket inodes among a process's open files.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Drops (the last column) of the rows of a /proc/net/udp table whose inode (column 10) is
/// in `inodes`.
pub fn drops_of(table: &str, inodes: &HashSet<u64>) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let inode: u64 = f.get(9)?.parse().ok()?;
            let drops: u64 = f.last()?.parse().ok()?;
            inodes.contains(&inode).then_some(drops)
        })
        .sum()
}

/// Datagrams dropped on the process's UDP sockets open now (0 when /proc cannot tell).
pub fn udp_drops(pid: u32) -> u64 {
    let inodes = socket_inodes(pid);
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| drops_of(&t, &inodes))
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_after_a_name_with_spaces() {
        let stat = "42 (web bench) S 1 42 42 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(267));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
        let me = cpu_seconds(std::process::id(), 100.0).unwrap();
        assert!(me >= 0.0);
    }

    #[test]
    fn drops_are_summed_for_the_given_inodes() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 0100007F:2710 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1001 2 0000000000000000 5
  2: 0100007F:2711 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1002 2 0000000000000000 7
  3: 0100007F:2712 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1003 2 0000000000000000 11
";
        let mine: HashSet<u64> = [1001, 1003].into();
        assert_eq!(drops_of(table, &mine), 16);
        assert_eq!(drops_of(table, &HashSet::new()), 0);
        // Our own sockets are found through /proc/self/fd.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!socket_inodes(std::process::id()).is_empty());
        drop(s);
    }
}
