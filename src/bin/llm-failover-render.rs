//! `llm-failover-render INPUT.json > envoy.yaml`: the Envoy bootstrap for a deployment, from its
//! plugin configuration and where Envoy listens and reaches the providers (docs/configuration.md).

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let input = match args.as_slice() {
        [path] if path == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
        }
        [path] => std::fs::read(path),
        _ => {
            eprintln!("usage: llm-failover-render INPUT.json (or - for standard input) > envoy.yaml");
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
    match llm_failover::render::render(&input) {
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
