//! This node among the others sharing the database: its id held by one live process at a
//! time, its heartbeat, and wake-ups from the others.
//!
//! A node holds a session advisory lock keyed by its id's row in `nodes` on a connection of
//! its own, for its whole life. A second process with the same id cannot take it and is
//! refused; when the holder dies (even by `kill -9`) its connection closes and PostgreSQL
//! frees the lock at once, so a restart is not refused. The same connection beats the
//! heartbeat (`nodes.alive_until`, by the database's clock: which nodes are alive, whose
//! half-ingested batches are abandoned) and LISTENs for `satchel_work`, sent when a batch is
//! created or canceled, to wake the dispatcher sooner (polling stays the guarantee). If the
//! connection is lost (the database restarted), it reconnects and takes the lock again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::OpenError;

/// The first key of the node locks ("satchel-node"); the second is `nodes.lock_key`.
const NODE_LOCK_CLASS: i32 = 0x5a7c_0001;

/// How often the heartbeat is written, and how long it counts for.
const HEARTBEAT: Duration = Duration::from_secs(5);
pub(crate) const HEARTBEAT_TTL_SECS: i64 = 30;

/// How long a start waits for its id's lock: a previous life killed a moment ago may still
/// hold it until PostgreSQL notices its connection closed.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The channel of wake-ups.
pub(crate) const CHANNEL: &str = "satchel_work";

/// Who to wake when another node signals work (set once the dispatcher exists).
pub(crate) type Waker = Arc<Mutex<Option<Arc<Notify>>>>;

/// This node's registration; dropping it stops the heartbeat and frees the id.
pub(crate) struct Node {
    pub instance: i64,
    task: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes `id` for this process (refusing it if a live node holds it), starts the heartbeat
/// and the wake-up listener.
pub(crate) async fn register(config: &Config, id: &str, waker: Waker) -> Result<Node, OpenError> {
    let client = connect(config, waker.clone()).await?;
    let key = lock_key(&client, id).await?;
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    while !try_lock(&client, key).await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(OpenError::NodeIdInUse(id.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let instance: i64 = client
        .query_one("SELECT nextval('node_instances')", &[])
        .await?
        .try_get(0)?;
    beat(&client, id, instance).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let (config, id) = (config.clone(), id.to_owned());
    let task = tokio::spawn(async move {
        keep_alive(client, config, id, key, instance, waker).await;
    });
    Ok(Node { instance, task })
}

/// Beats the heartbeat for the life of the node; reconnects (and retakes the lock) when the
/// connection is lost.
async fn keep_alive(
    mut client: Client,
    config: Config,
    id: String,
    key: i32,
    instance: i64,
    waker: Waker,
) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        if !client.is_closed() {
            if let Err(e) = beat(&client, &id, instance).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
            continue;
        }
        tracing::warn!("lost the node connection to PostgreSQL; reconnecting");
        match reconnect(&config, &id, key, instance, waker.clone()).await {
            Ok(c) => {
                tracing::info!("node connection to PostgreSQL restored");
                client = c;
            }
            Err(e) => tracing::warn!(error = %e, "cannot reconnect to PostgreSQL yet"),
        }
    }
}

async fn reconnect(
    config: &Config,
    id: &str,
    key: i32,
    instance: i64,
    waker: Waker,
) -> Result<Client, OpenError> {
    let client = connect(config, waker).await?;
    if !try_lock(&client, key).await? {
        tracing::error!(
            node = id,
            "another live process took this node id while the connection was down; \
             this node's leases are no longer safely its own"
        );
        return Err(OpenError::NodeIdInUse(id.to_owned()));
    }
    beat(&client, id, instance).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(client)
}

/// Connects, driving the connection on a task that turns notifications into wake-ups.
async fn connect(config: &Config, waker: Waker) -> Result<Client, OpenError> {
    let (client, mut connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let wake = waker.lock().map(|w| w.clone()).unwrap_or(None);
                    if let Some(wake) = wake {
                        wake.notify_one();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "node connection closed");
                    break;
                }
            }
        }
    });
    Ok(client)
}

async fn lock_key(client: &Client, id: &str) -> Result<i32, OpenError> {
    client
        .execute(
            "INSERT INTO nodes (id) VALUES ($1) ON CONFLICT (id) DO NOTHING",
            &[&id],
        )
        .await?;
    let key: i64 = client
        .query_one("SELECT lock_key FROM nodes WHERE id = $1", &[&id])
        .await?
        .try_get(0)?;
    i32::try_from(key).map_err(|_| OpenError::TooManyNodes)
}

async fn try_lock(client: &Client, key: i32) -> Result<bool, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&NODE_LOCK_CLASS, &key],
        )
        .await?
        .try_get(0)
}

async fn beat(client: &Client, id: &str, instance: i64) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "UPDATE nodes SET instance = $2, alive_until = now() + interval '{HEARTBEAT_TTL_SECS} seconds'
                 WHERE id = $1"
            ),
            &[&id, &instance],
        )
        .await
        .map(|_| ())
}

/// The nodes whose heartbeat is current (this one included).
pub(crate) async fn live_nodes(
    pool: &deadpool_postgres::Pool,
) -> Result<u32, satchel_core::store::StoreError> {
    let client = crate::db::connection(pool).await?;
    let live: i64 = client
        .query_one("SELECT count(*) FROM nodes WHERE alive_until > now()", &[])
        .await
        .map_err(crate::db::engine)?
        .try_get(0)
        .map_err(crate::db::engine)?;
    Ok(u32::try_from(live).unwrap_or(u32::MAX).max(1))
}
