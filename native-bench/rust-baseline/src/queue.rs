//! The in-memory queue between the 202 and Postgres. An event is only in this process's memory
//! until a writer inserts it: a crash, a kill or a failed insert loses it. That is the behaviour
//! the comparison measures against.
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_postgres::types::Json;
use uuid::Uuid;

use crate::db;

pub struct QueuedEvent {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_type: String,
    pub payload: Value,
    pub dedup_id: Option<String>,
}

pub struct Writers {
    handles: Vec<JoinHandle<()>>,
}

/// Opens one connection per writer and starts the writers; they share the one receiver.
pub async fn start(
    database_url: &str,
    writers: usize,
    capacity: usize,
) -> Result<(mpsc::Sender<QueuedEvent>, Writers), String> {
    let (sender, receiver) = mpsc::channel::<QueuedEvent>(capacity);
    let receiver = Arc::new(Mutex::new(receiver));
    let mut handles = Vec::with_capacity(writers);
    for _ in 0..writers {
        let client = db::connect(database_url).await?;
        let insert = client
            .prepare(db::INSERT_EVENT)
            .await
            .map_err(|e| format!("cannot prepare the event insert: {e}"))?;
        let receiver = Arc::clone(&receiver);
        handles.push(tokio::spawn(async move {
            loop {
                // The lock is held only while waiting for the next event, not during the insert.
                let next = receiver.lock().await.recv().await;
                let Some(event) = next else { break };
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
                    &event.id,
                    &event.organization_id,
                    &event.event_type,
                    &Json(&event.payload),
                    &event.dedup_id,
                ];
                if let Err(e) = client.execute(&insert, &params).await {
                    eprintln!(
                        "{}",
                        serde_json::json!({"msg": "event_lost", "id": event.id.to_string(), "error": e.to_string()})
                    );
                }
            }
        }));
    }
    Ok((sender, Writers { handles }))
}

impl Writers {
    /// Waits (bounded) for the writers to empty the queue once every sender is gone.
    pub async fn drain(self, deadline: Duration) -> bool {
        let all = async {
            for handle in self.handles {
                let _ = handle.await;
            }
        };
        tokio::time::timeout(deadline, all).await.is_ok()
    }
}
