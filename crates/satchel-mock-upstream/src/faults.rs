//! Latency distributions and fault injection.

use std::time::Duration;

/// How latency varies around its configured mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LatencyDistribution {
    /// Always the mean.
    #[default]
    Fixed,
    /// Uniform between 0 and twice the mean.
    Uniform,
    /// Exponential with that mean (a long tail, like real model servers).
    Exponential,
}

impl LatencyDistribution {
    pub fn sample(self, mean: Duration) -> Duration {
        match self {
            Self::Fixed => mean,
            Self::Uniform => mean.mul_f64(2.0 * fastrand::f64()),
            Self::Exponential => mean.mul_f64(-(1.0 - fastrand::f64()).ln()),
        }
    }
}

impl std::str::FromStr for LatencyDistribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "uniform" => Ok(Self::Uniform),
            "exponential" => Ok(Self::Exponential),
            other => Err(format!(
                "unknown latency distribution {other:?}: fixed, uniform or exponential"
            )),
        }
    }
}

/// Shares of requests (0.0–1.0) answered with each fault; they add up to at most 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    pub rate_limited: f64,
    pub overloaded: f64,
    pub server_error: f64,
    pub hang: f64,
    pub reset: f64,
    pub malformed: f64,
    /// The `retry-after` sent with 429 and 529.
    pub retry_after: Duration,
    /// How long a hang lasts (make it longer than the client's timeout).
    pub hang_for: Duration,
    /// Each distinct request body is answered 429 on its first this many attempts.
    pub fail_first: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limited: 0.0,
            overloaded: 0.0,
            server_error: 0.0,
            hang: 0.0,
            reset: 0.0,
            malformed: 0.0,
            retry_after: Duration::from_secs(1),
            hang_for: Duration::from_secs(3600),
            fail_first: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    RateLimited,
    Overloaded,
    ServerError,
    Hang,
    Reset,
    Malformed,
}

impl Faults {
    pub(crate) fn pick(&self) -> Fault {
        let mut roll = fastrand::f64();
        for (share, fault) in [
            (self.rate_limited, Fault::RateLimited),
            (self.overloaded, Fault::Overloaded),
            (self.server_error, Fault::ServerError),
            (self.hang, Fault::Hang),
            (self.reset, Fault::Reset),
            (self.malformed, Fault::Malformed),
        ] {
            if roll < share {
                return fault;
            }
            roll -= share;
        }
        Fault::None
    }
}
