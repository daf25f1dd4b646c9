//! A start line for shards: generator processes connect their clients at their own pace,
//! then all begin sending and measuring at the same wall-clock instant, so that shard 0
//! does not send before the other shards' clients are there, and every shard's measurement
//! window covers the same seconds.
//!
//! The shards share a directory. Each writes `ready-<i>` (its ready time in ns) once its
//! clients are connected and waits until all `n` files exist; every shard then starts at
//! the latest ready time plus [`LEAD`], which they all compute alike without a leader.

use std::path::Path;
use std::time::Duration;

use crate::limits::Shard;
use crate::metrics::now_nanos;

/// Time between the last shard being ready and the start: room for the others to notice.
const LEAD: Duration = Duration::from_millis(500);

/// How often a waiting shard looks for the others.
const POLL: Duration = Duration::from_millis(20);

/// Marks this shard ready in `dir`, waits for the others (at most `timeout`), then sleeps
/// until the common start. Returns the start in wall-clock ns.
///
/// # Errors
/// The directory cannot be written or read, or not every shard was ready in time (one of
/// them failed or is far slower): a run with missing shards would measure something else.
pub(crate) async fn wait(dir: &Path, shard: Shard, timeout: Duration) -> Result<u64, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ready = dir.join(format!("ready-{}", shard.index));
    let partial = dir.join(format!(".ready-{}", shard.index));
    // Written then renamed, so a reader never sees half a number.
    std::fs::write(&partial, now_nanos().to_string())
        .and_then(|()| std::fs::rename(&partial, &ready))
        .map_err(|e| format!("cannot write {}: {e}", ready.display()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let latest = loop {
        if let Some(latest) = all_ready(dir, shard.count) {
            break latest;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "not every shard of {} was ready within {timeout:?} (see {})",
                shard.count,
                dir.display()
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    let start = latest.saturating_add(u64::try_from(LEAD.as_nanos()).unwrap_or(u64::MAX));
    let now = now_nanos();
    if start > now {
        tokio::time::sleep(Duration::from_nanos(start - now)).await;
    }
    Ok(start)
}

/// The latest ready time, once all `count` shards have written theirs.
fn all_ready(dir: &Path, count: usize) -> Option<u64> {
    let mut latest = 0;
    for i in 0..count {
        let text = std::fs::read_to_string(dir.join(format!("ready-{i}"))).ok()?;
        latest = latest.max(text.trim().parse::<u64>().ok()?);
    }
    Some(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hubcast-bench-barrier-{label}-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn shards_start_together_after_the_last_is_ready() {
        let dir = temp_dir("together");
        let early = {
            let dir = dir.clone();
            tokio::spawn(async move {
                wait(&dir, Shard::parse("0/2").unwrap(), Duration::from_secs(10)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let late_ready = now_nanos();
        let late = wait(&dir, Shard::parse("1/2").unwrap(), Duration::from_secs(10))
            .await
            .unwrap();
        let early = early.await.unwrap().unwrap();
        assert_eq!(early, late, "both shards compute the same start");
        assert!(
            late >= late_ready + 400_000_000,
            "the start follows the last ready shard"
        );
        assert!(now_nanos() >= late, "nobody returns before the start");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_missing_shard_fails_the_wait() {
        let dir = temp_dir("missing");
        let err = wait(
            &dir,
            Shard::parse("0/2").unwrap(),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(err.contains("not every shard"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
