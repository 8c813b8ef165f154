//! SQLite's single writer: one connection on its own thread, fed by a queue, so the writes of
//! this process never contend for SQLite's write lock (no `SQLITE_BUSY`, no busy-waiting) and
//! a write's latency is its wait in the queue plus its own work.
//!
//! Group commit: the thread takes every job queued (up to [`MAX_BATCH`]), runs them in one
//! `BEGIN IMMEDIATE` transaction, each inside its own `SAVEPOINT` (a job that fails rolls back
//! to its savepoint only, so each job keeps its own atomicity and sees the writes of the jobs
//! before it), and commits once: one fsync for the whole batch. Replies are sent only after
//! `COMMIT` succeeded; if the batch cannot commit, every job in it gets the error and nothing
//! of it is written. Another process (the CLI while a server runs) may still hold the lock:
//! the connection keeps `busy_timeout` for that.

use super::{StoreError, StoreResult};
use deadpool_sqlite::rusqlite::Connection;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most jobs committed together, so one batch never holds the write lock for long.
pub const MAX_BATCH: usize = 128;

/// Answers a job's caller: with its own result, or with the batch's failure.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// What a grouped job leaves for after the commit: whether it succeeded (to release or roll
/// back its savepoint) and how to answer its caller once the batch's outcome is known.
struct Done {
    /// The job returned `Ok`: keep its writes.
    ok: bool,
    /// Sends the job's result, or the batch's failure, to the caller.
    reply: Reply,
}

/// A job of a batch: run it, or answer it with a failure without running it.
trait Grouped: Send {
    /// Runs the job inside its savepoint.
    fn run(self: Box<Self>, conn: &Connection) -> Done;
    /// Answers the caller with `error`; the job never runs.
    fn fail(self: Box<Self>, error: &StoreError);
}

/// A caller's closure and where its answer goes.
struct Pending<F, T> {
    /// The work.
    f: F,
    /// The caller's end.
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Grouped for Pending<F, T>
where
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Done {
        let Pending { f, reply } = *self;
        let result = f(conn);
        Done {
            ok: result.is_ok(),
            reply: Box::new(move |failed: Option<&StoreError>| {
                let _ = reply.send(match failed {
                    None => result,
                    Some(e) => Err(duplicate(e)),
                });
            }),
        }
    }

    fn fail(self: Box<Self>, error: &StoreError) {
        let _ = self.reply.send(Err(duplicate(error)));
    }
}

/// A unit of work for the writer thread.
enum Job {
    /// Runs inside the batch transaction, in its own savepoint.
    Grouped(Box<dyn Grouped>),
    /// Runs alone, outside any transaction, with the connection to itself (migrations manage
    /// their own transactions).
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// The handle to the writer thread; dropping it lets the thread finish the queued jobs and end.
pub struct Writer {
    /// The queue.
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the thread that owns `conn` (already configured).
    pub fn start(conn: Connection) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("provisio-sqlite-writer".into())
            .spawn(move || serve(conn, queue))?;
        Ok(Writer { jobs })
    }

    /// Runs `f` in the next batch and returns its result once the batch committed. An `Err`
    /// from `f` rolls back `f`'s writes only.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        self.submit(Job::Grouped(Box::new(Pending { f, reply })), receiver)
            .await
    }

    /// Runs `f` alone on the writer connection, between batches.
    pub async fn alone<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let job = Job::Alone(Box::new(move |conn: &mut Connection| {
            let _ = sender.send(f(conn));
        }));
        self.submit(job, receiver).await
    }

    /// Queues a job and waits for its answer.
    async fn submit<T>(
        &self,
        job: Job,
        receiver: oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Backend("sqlite writer thread is gone".into()))?;
        // No answer: the job panicked (its writes were rolled back to its savepoint, but the
        // caller cannot know what it did) or the thread died.
        receiver.await.map_err(|_| {
            StoreError::Unavailable("sqlite writer job ended without an answer".into())
        })?
    }
}

/// The thread's loop: wait for a job, then run everything queued as one batch.
fn serve(mut conn: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Grouped(job) => {
                    batch.push(job);
                    if batch.len() < MAX_BATCH {
                        next = queue.try_recv().ok();
                    }
                }
                Job::Alone(job) => {
                    run_batch(&conn, std::mem::take(&mut batch));
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                        tracing::error!("sqlite writer: a job panicked");
                        if !conn.is_autocommit() {
                            let _ = conn.execute_batch("ROLLBACK");
                        }
                    }
                    next = queue.try_recv().ok();
                }
            }
        }
        run_batch(&conn, batch);
    }
}

/// Runs grouped jobs in one transaction and answers each after the commit.
fn run_batch(conn: &Connection, batch: Vec<Box<dyn Grouped>>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = StoreError::from(e);
        tracing::warn!(error = %e, jobs = batch.len(), "sqlite writer cannot begin a batch");
        for job in batch {
            job.fail(&e);
        }
        return;
    }
    let mut done: Vec<Done> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    let mut failure: Option<StoreError> = None;
    for job in jobs.by_ref() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            failure = Some(e.into());
            break;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(conn)));
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk full): every job of
            // the batch is lost, including this one.
            failure = Some(StoreError::Backend(
                "sqlite rolled back the write batch".into(),
            ));
            if let Ok(d) = outcome {
                done.push(d);
            }
            break;
        }
        let keep = match outcome {
            Ok(d) => {
                let ok = d.ok;
                done.push(d);
                ok
            }
            Err(_) => {
                tracing::error!("sqlite writer: a job panicked; its writes are rolled back");
                false
            }
        };
        let end = if keep {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(e) = conn.execute_batch(end) {
            failure = Some(e.into());
            break;
        }
    }
    let failure = match failure {
        Some(e) => Some(e),
        None => conn.execute_batch("COMMIT").err().map(StoreError::from),
    };
    if let Some(e) = &failure {
        tracing::warn!(error = %e, jobs = done.len(), "sqlite writer batch failed; nothing written");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in jobs {
            job.fail(e);
        }
    }
    for d in done {
        (d.reply)(failure.as_ref());
    }
}

/// A copy of an error for every job of a failed batch (`StoreError` holds no handle, only
/// text, so nothing is lost).
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
    }
}
