//! Standard output for the commands. It notes when its reader went away (`tollgate tail |
//! head`), whatever wraps the error on its way up (csv and serde_json keep the I/O error to
//! themselves), so that `main` ends such a command quietly, with exit code 0.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static READER_GONE: AtomicBool = AtomicBool::new(false);

/// Standard output (unbuffered beyond std's own line buffer: wrap it in a `BufWriter` for
/// many small writes).
pub struct Stdout;

/// Whether a write to standard output failed because its reader went away.
pub fn reader_gone() -> bool {
    READER_GONE.load(Ordering::Relaxed)
}

fn noted<T>(result: io::Result<T>) -> io::Result<T> {
    if let Err(error) = &result
        && error.kind() == io::ErrorKind::BrokenPipe
    {
        READER_GONE.store(true, Ordering::Relaxed);
    }
    result
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        noted(io::stdout().lock().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        noted(io::stdout().lock().write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        noted(io::stdout().lock().flush())
    }
}
