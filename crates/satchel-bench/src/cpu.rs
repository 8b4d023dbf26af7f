//! CPU time spent by the processes of a run, from the kernel's own accounts
//! (`/proc/PID/stat`): each satchel node's, and the PostgreSQL cluster's, that is its
//! postmaster's, its live children's (backends, WAL writer, checkpointer…) and, through the
//! postmaster's `cutime`/`cstime`, that of the children that have exited and been reaped. The
//! difference of two readings is what the run cost, whatever came and went in between.
//! Beside them, the whole machine's idle time (`/proc/stat`): on a shared machine, what is
//! neither ours nor idle went to other processes.

use anyhow::{Context, Result};

/// CPU seconds so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    pub satchel: f64,
    pub postgres: f64,
    /// Idle (and waiting for I/O) over all the machine's cores.
    pub idle: f64,
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;
    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            satchel: self.satchel - earlier.satchel,
            postgres: self.postgres - earlier.postgres,
            idle: self.idle - earlier.idle,
        }
    }
}

impl CpuTime {
    pub fn total(&self) -> f64 {
        self.satchel + self.postgres
    }
}

/// The processes to account for.
pub struct Meter {
    nodes: Vec<u32>,
    postmaster: u32,
    ticks_per_second: f64,
}

/// The fields of `/proc/PID/stat` read here.
struct Stat {
    parent: u32,
    /// utime + stime, in clock ticks.
    own: u64,
    /// cutime + cstime: the reaped children's.
    children: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its ')'.
    let fields: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split(' ').collect();
    // fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        parent: u32::try_from(field(4)?).ok()?,
        own: field(14)? + field(15)?,
        children: field(16)? + field(17)?,
    })
}

impl Meter {
    /// `nodes`: the satchel processes; `backend`: the pid of any backend of the cluster
    /// (`pg_backend_pid()`), whose parent is the postmaster.
    pub fn new(nodes: Vec<u32>, backend: u32) -> Result<Self> {
        let postmaster = stat(backend)
            .context("cannot read the PostgreSQL backend's /proc/PID/stat")?
            .parent;
        Ok(Self {
            nodes,
            postmaster,
            ticks_per_second: rustix::param::clock_ticks_per_second() as f64,
        })
    }

    pub fn read(&self) -> Result<CpuTime> {
        let seconds = |ticks: u64| ticks as f64 / self.ticks_per_second;
        let mut satchel = 0;
        for &pid in &self.nodes {
            satchel += stat(pid)
                .with_context(|| format!("satchel node {pid} is gone"))?
                .own;
        }
        let postmaster = stat(self.postmaster).context("the postmaster is gone")?;
        let mut postgres = postmaster.own + postmaster.children;
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(child) = stat(pid).filter(|s| s.parent == self.postmaster) {
                postgres += child.own;
            }
        }
        Ok(CpuTime {
            satchel: seconds(satchel),
            postgres: seconds(postgres),
            idle: seconds(idle_ticks()?),
        })
    }
}

/// The machine's idle and iowait ticks, all cores (the first line of `/proc/stat`).
fn idle_ticks() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait …
    Ok(fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0))
}
