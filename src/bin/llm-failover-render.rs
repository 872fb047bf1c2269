//! `llm-failover-render INPUT.json > envoy.yaml`: the Envoy bootstrap for a deployment, from its
//! plugin configuration and where Envoy listens and reaches the providers (docs/configuration.md).
//! `llm-failover-render --istio INPUT.json > envoyfilter.yaml`: the same deployment as Istio
//! resources for Istio's own gateway proxies (docs/deploy-istio.md).

use std::io::Read;
use std::process::ExitCode;

const USAGE: &str = "usage: llm-failover-render [--istio] INPUT.json (or - for standard input) > OUTPUT.yaml";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let istio = args.first().is_some_and(|a| a == "--istio");
    if istio {
        args.remove(0);
    }
    let input = match args.as_slice() {
        [path] if path == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
        }
        [path] if !path.starts_with("--") => std::fs::read(path),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let input = match input {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("llm-failover-render: cannot read {}: {error}", args.join(" "));
            return ExitCode::from(2);
        }
    };
    let rendered = if istio { llm_failover::render::render_istio(&input) } else { llm_failover::render::render(&input) };
    match rendered {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("llm-failover-render: refused: {error}");
            ExitCode::from(1)
        }
    }
}
