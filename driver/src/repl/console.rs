//! Where a session's output goes and what interrupts it: the terminal the
//! REPL runs in (Ctrl-C), or the notebook a Jupyter kernel answers (its
//! interrupt button). The session itself does not know which.

use std::sync::Arc;

use tokio::sync::Notify;

use super::notebook::Output;

/// A session's output.
pub(crate) trait Console: Send {
    /// A line that is not a cell's result: a notice, a command's answer.
    fn say(&mut self, text: &str);
    /// Cell `n`'s output; `source` is what ran.
    fn cell(&mut self, n: usize, source: &str, output: &Output);
    /// A command that failed, in a sentence.
    fn fail(&mut self, message: &str);
    /// Rows that arrived while following a job (`\tail`).
    fn rows(&mut self, title: &str, text: &str, html: Option<&str>);
}

/// The REPL's terminal.
pub(crate) struct Terminal {
    /// Print each cell's source before its output (a script's run, where
    /// nobody typed it).
    pub echo: bool,
}

impl Console for Terminal {
    fn say(&mut self, text: &str) {
        println!("{text}");
    }

    fn cell(&mut self, n: usize, source: &str, output: &Output) {
        if self.echo {
            // A script's echo may end up in a CI log: credentials stay out.
            println!("[{n}]> {}", spate_engine::redact::sql(source));
        }
        match output {
            Output::Result { text, .. } => println!("Out[{n}]:\n{text}"),
            Output::Error(message) => println!("Out[{n}]: error: {message}"),
        }
    }

    fn fail(&mut self, message: &str) {
        println!("error: {message}");
    }

    fn rows(&mut self, title: &str, text: &str, _html: Option<&str>) {
        println!("{title}");
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

/// What ends a running query or `\tail`.
#[derive(Clone)]
pub(crate) enum Interrupt {
    /// Ctrl-C in the terminal.
    CtrlC,
    /// A Jupyter `interrupt_request`; only a wait under way is woken, so an
    /// interrupt between cells cancels nothing later.
    Message(Arc<Notify>),
}

impl Interrupt {
    /// How the user gives it, for messages.
    pub fn how(&self) -> &'static str {
        match self {
            Interrupt::CtrlC => "Ctrl-C returns to the prompt",
            Interrupt::Message(_) => "interrupt the kernel to stop",
        }
    }

    pub async fn wait(&self) {
        match self {
            Interrupt::CtrlC => {
                let _ = tokio::signal::ctrl_c().await;
            }
            Interrupt::Message(notify) => notify.notified().await,
        }
    }
}
