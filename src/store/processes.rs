//! The registry's desired set and each task's status (`processes`), behind the registry's
//! `ProcessStore` trait so the supervisor can restore what ran before a restart.

use std::str::FromStr;

use super::{Store, StoreError};
use crate::registry::{ProcessInfo, ProcessStore, Status};

impl Store {
    pub async fn save_process(&self, info: &ProcessInfo, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO processes (kind, id, spec, desired, status, restarts, last_error, \
                 started_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (kind, id) DO UPDATE SET spec = excluded.spec, \
                 desired = excluded.desired, status = excluded.status, \
                 restarts = excluded.restarts, last_error = excluded.last_error, \
                 started_at = excluded.started_at, updated_at = excluded.updated_at",
        )
        .bind(&info.kind)
        .bind(&info.id)
        .bind(info.spec.to_string())
        .bind(i64::from(info.desired))
        .bind(info.status.as_str())
        .bind(i64::from(info.restarts))
        .bind(info.last_error.as_deref())
        .bind(info.started_at_ms)
        .bind(now_ms)
        .execute(&self.shared.writer)
        .await?;
        self.wrote();
        Ok(())
    }

    pub async fn load_processes(&self) -> Result<Vec<ProcessInfo>, StoreError> {
        type Row = (
            String,
            String,
            String,
            i64,
            String,
            i64,
            Option<String>,
            Option<i64>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT kind, id, spec, desired, status, restarts, last_error, started_at \
             FROM processes ORDER BY kind, id",
        )
        .fetch_all(&self.shared.readers)
        .await?;
        rows.into_iter()
            .map(
                |(kind, id, spec, desired, status, restarts, last_error, started_at)| {
                    let corrupt =
                        |what: &str| StoreError::Corrupt(format!("process {kind}/{id}: {what}"));
                    Ok(ProcessInfo {
                        spec: serde_json::from_str(&spec).map_err(|_| corrupt("spec"))?,
                        desired: desired != 0,
                        status: Status::from_str(&status).map_err(|_| corrupt("status"))?,
                        restarts: u32::try_from(restarts).map_err(|_| corrupt("restarts"))?,
                        last_error,
                        started_at_ms: started_at.unwrap_or(0),
                        kind,
                        id,
                    })
                },
            )
            .collect()
    }
}

#[async_trait::async_trait]
impl ProcessStore for Store {
    async fn save(&self, info: &ProcessInfo) -> Result<(), String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.save_process(info, now)
            .await
            .map_err(|e| e.to_string())
    }

    async fn load(&self) -> Result<Vec<ProcessInfo>, String> {
        self.load_processes().await.map_err(|e| e.to_string())
    }
}
