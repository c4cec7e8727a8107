//! Secret values kept out of everything the process writes about itself: every log line
//! (tracing events, librdkafka's debug output forwarded to them included) and panic
//! messages. Which settings hold secrets is `tollgate_worker::secret`'s to say; this is the
//! last line of defence for a secret that reaches a message anyway (librdkafka quoting a
//! setting it refuses, a library's `Debug` output).

use std::io::Write;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

pub use tollgate_worker::secret::REDACTED;

/// Replaces every secret in `text` by [`REDACTED`].
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_owned(), |text, secret| text.replace(secret.as_str(), REDACTED))
}

/// Log lines to stderr, redacted: each event is formatted into a [`Line`], which is
/// redacted and written whole when the formatter drops it.
#[derive(Clone, Debug)]
pub struct Stderr {
    secrets: Arc<[String]>,
}

impl Stderr {
    /// Redacting these values.
    pub fn new(secrets: Vec<String>) -> Self {
        Stderr { secrets: secrets.into() }
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { text: Vec::new(), secrets: Arc::clone(&self.secrets) }
    }
}

/// One event's output, written on drop.
#[derive(Debug)]
pub struct Line {
    text: Vec<u8>,
    secrets: Arc<[String]>,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        let text = if self.secrets.is_empty() { text.into_owned() } else { redact(&text, &self.secrets) };
        // A log line that cannot be written has nowhere else to go.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Redacts the secrets from panic messages too (the default hook prints them as they are).
pub fn panic_hook(secrets: Vec<String>) {
    if secrets.is_empty() {
        return;
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = tollgate_worker::error::panic_text(info.payload()).unwrap_or("");
        if secrets.iter().any(|s| message.contains(s.as_str())) {
            let location = info.location().map_or_else(String::new, |l| format!(" at {l}"));
            eprintln!("panicked{location}: {}", redact(message, &secrets));
        } else {
            default(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence_of_every_secret() {
        let secrets = vec!["s3cret".to_owned(), String::new(), "pa55".to_owned()];
        assert_eq!(
            redact("sasl.password=s3cret pa55 s3cret!", &secrets),
            "sasl.password=[redacted] [redacted] [redacted]!"
        );
    }
}
