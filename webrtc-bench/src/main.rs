//! `webrtc-bench`: the two processes of `scripts/bench webrtc` (WebRTC legs per core).
//!
//! - `webrtc-bench serve --socket PATH --relay-ports MIN-MAX --webrtc-ports MIN-MAX --max N`:
//!   the gateway side (see `serve`), answering the generator's browsers over a Unix socket.
//! - `webrtc-bench gen --socket PATH --pid SERVE_PID --max N --secs S --budget-secs B
//!   --codec pcmu|opus --browser-ports MIN-MAX [--clk-tck T]`: the browsers and RTP callers
//!   (see `generate`), ramping the number of calls; prints `STEP` lines and a `SUMMARY`.
//!
//! Both run on a current-thread runtime: one core each, which is what the benchmark measures.

mod generate;
mod procfs;
mod ramp;
mod serve;
mod signal;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use switchboard_webrtc::Codec;

type Res<T> = Result<T, String>;

/// An inclusive UDP port range, `MIN-MAX` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Res<Self> {
        let (a, b) = s.split_once('-').ok_or("MIN-MAX")?;
        let min: u16 = a.parse().map_err(|_| "MIN-MAX")?;
        let max: u16 = b.parse().map_err(|_| "MIN-MAX")?;
        if min < 1024 || min > max {
            return Err(format!("{s}: a range above 1023, MIN <= MAX"));
        }
        Ok(Self { min, max })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        eprintln!("usage: webrtc-bench serve|gen --key value ...");
        return ExitCode::from(2);
    };
    let result = parse_opts(&args[1..]).and_then(|o| run(&mode, &o));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webrtc-bench {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mode: &str, o: &HashMap<String, String>) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let socket: PathBuf = opt(o, "socket")?;
    let max: usize = opt(o, "max")?;
    if !(1..=1500).contains(&max) {
        return Err("--max 1..1500".into());
    }
    match mode {
        "serve" => rt.block_on(serve::serve(serve::ServeOpts {
            socket: &socket,
            relay_ports: opt(o, "relay-ports")?,
            webrtc_ports: opt(o, "webrtc-ports")?,
            max_calls: max,
        })),
        "gen" => {
            let secs: u64 = opt(o, "secs")?;
            let budget: u64 = opt(o, "budget-secs")?;
            if !(1..=60).contains(&secs) || !(10..=900).contains(&budget) {
                return Err("--secs 1..60, --budget-secs 10..900".into());
            }
            let codec = match opt::<String>(o, "codec")?.as_str() {
                "pcmu" => Codec::Pcmu,
                "opus" => Codec::Opus,
                other => return Err(format!("--codec pcmu|opus, not {other}")),
            };
            let clk_tck = o
                .get("clk-tck")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100.0);
            // The receivers share `Rc` sockets: one thread, a local task set.
            rt.block_on(tokio::task::LocalSet::new().run_until(generate::generate(
                generate::GenOpts {
                    socket: &socket,
                    serve_pid: opt(o, "pid")?,
                    clk_tck,
                    max,
                    secs,
                    budget: Duration::from_secs(budget),
                    codec,
                    browser_ports: opt(o, "browser-ports")?,
                },
            )))
        }
        other => Err(format!("unknown mode {other}")),
    }
}

fn parse_opts(args: &[String]) -> Res<HashMap<String, String>> {
    let mut opts = HashMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let key = k
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --key, got {k}"))?;
        let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
        opts.insert(key.to_string(), v.clone());
    }
    Ok(opts)
}

fn opt<T: std::str::FromStr>(o: &HashMap<String, String>, key: &str) -> Res<T> {
    o.get(key)
        .ok_or_else(|| format!("--{key} is required"))?
        .parse()
        .map_err(|_| format!("--{key}: invalid value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(
            "10000-13999".parse::<PortRange>(),
            Ok(PortRange {
                min: 10000,
                max: 13999
            })
        );
        assert!("13999-10000".parse::<PortRange>().is_err());
        assert!("80-90".parse::<PortRange>().is_err());
        assert!("10000".parse::<PortRange>().is_err());
    }
}
