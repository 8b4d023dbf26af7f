//! `satchel mock-upstream`: the fake model server of `satchel-mock-upstream`, as a process.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use satchel_mock_upstream::{Faults, LatencyDistribution, MockConfig};

#[derive(Debug, Args)]
pub struct MockArgs {
    /// Address to listen on (port 0: any free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Mean time per request, e.g. 20ms.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// How latency varies around the mean: fixed, uniform (0 to 2× mean) or exponential.
    #[arg(long, default_value = "fixed")]
    latency_distribution: LatencyDistribution,
    /// Share of requests answered 429 rate_limit_error, with retry-after.
    #[arg(long, default_value_t = 0.0)]
    rate_429: f64,
    /// Share answered 529 overloaded_error, with retry-after.
    #[arg(long, default_value_t = 0.0)]
    rate_529: f64,
    /// Share answered 500 api_error.
    #[arg(long, default_value_t = 0.0)]
    rate_500: f64,
    /// Share that hang for --hang (past the client's timeout).
    #[arg(long, default_value_t = 0.0)]
    rate_hang: f64,
    /// Share whose connection is dropped before a complete response.
    #[arg(long, default_value_t = 0.0)]
    rate_reset: f64,
    /// Share answered 200 with a malformed JSON body.
    #[arg(long, default_value_t = 0.0)]
    rate_malformed: f64,
    /// The retry-after sent with 429 and 529, e.g. 1s or 250ms.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    retry_after: Duration,
    /// How long a hang lasts.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    hang: Duration,
    /// Answer each distinct request body 429 on its first N attempts (to observe retries).
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
}

pub fn run(args: MockArgs) -> anyhow::Result<()> {
    let shares = [
        args.rate_429,
        args.rate_529,
        args.rate_500,
        args.rate_hang,
        args.rate_reset,
        args.rate_malformed,
    ];
    anyhow::ensure!(
        shares.iter().all(|s| (0.0..=1.0).contains(s)) && shares.iter().sum::<f64>() <= 1.0 + 1e-9,
        "fault rates must each be within 0..1 and add up to at most 1"
    );
    let config = MockConfig {
        latency: args.latency,
        distribution: args.latency_distribution,
        faults: Faults {
            rate_limited: args.rate_429,
            overloaded: args.rate_529,
            server_error: args.rate_500,
            hang: args.rate_hang,
            reset: args.rate_reset,
            malformed: args.rate_malformed,
            retry_after: args.retry_after,
            hang_for: args.hang,
            fail_first: args.fail_first,
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mock = satchel_mock_upstream::start(args.listen, config).await.context("cannot start the mock upstream")?;
        println!("mock upstream listening on http://{}", mock.addr);
        tokio::select! {
            result = mock.task => result.context("the mock upstream stopped")?.context("the mock upstream failed"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
