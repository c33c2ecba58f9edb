//! `driver kernel`: Spate SQL as a Jupyter kernel. A notebook's cells are
//! the REPL's cells (statements and `\commands`, the session's DDL kept
//! across them), answered over the Jupyter messaging protocol: ZeroMQ with
//! HMAC-signed messages on the shell, iopub, control, stdin and heartbeat
//! channels, spoken by `jupyter-zmq-client`. Rows come back as
//! `execute_result` with a text and an HTML table; the interrupt button
//! (an `interrupt_request`, the kernelspec asks for message mode) drops the
//! running query, which cancels its tasks on the workers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jupyter_protocol::{
    CodeMirrorMode, CommInfoReply, CompleteReply, ConnectionInfo, DisplayData, ErrorOutput,
    ExecuteInput, ExecuteReply, ExecuteResult, ExecutionCount, HistoryReply, InspectReply,
    InterruptReply, IoPubWelcome, IsCompleteReply, IsCompleteReplyStatus, JupyterMessage,
    JupyterMessageContent, KernelInfoReply, LanguageInfo, Media, MediaType, ReplyError,
    ReplyStatus, ShutdownReply, Status, StreamContent,
};
use jupyter_zmq_client::{
    SubscriptionEvent, create_kernel_control_connection, create_kernel_heartbeat_connection,
    create_kernel_iopub_xpub_connection, create_kernel_shell_connection,
    create_kernel_stdin_connection,
};
use serde_json::json;
use tokio::sync::{Notify, mpsc, oneshot};

use super::console::{Console, Interrupt};
use super::helper::{COMMANDS, completions, is_complete};
use super::notebook::Output;
use super::render::OutputFormat;
use super::{ClusterArgs, Repl, columns_query};
use crate::DriverError;

/// The kernelspec's folder name: notebooks name their kernel by it.
const KERNEL_NAME: &str = "spate";
const DISPLAY_NAME: &str = "Spate SQL";

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KernelArgs {
    #[command(subcommand)]
    action: Option<KernelAction>,
    /// The connection file Jupyter writes for a kernel it starts (the
    /// kernelspec passes it; nobody types this).
    #[arg(long, short = 'f')]
    connection_file: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl KernelArgs {
    /// Where the kernel's own cluster logs, if it runs one.
    pub fn log_file(&self) -> Option<PathBuf> {
        match self.action {
            Some(_) => None,
            None => self.cluster.log_file(),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
enum KernelAction {
    /// Install the "Spate SQL" kernelspec, so that Jupyter (JupyterLab,
    /// nbclient, jupyter console) can start this kernel.
    Install(InstallArgs),
}

#[derive(clap::Args, Debug)]
struct InstallArgs {
    /// Into the user's Jupyter data folder ($JUPYTER_DATA_DIR, or
    /// ~/.local/share/jupyter) instead of the system's (/usr/local/share/jupyter).
    #[arg(long, conflicts_with = "prefix")]
    user: bool,
    /// Into PREFIX/share/jupyter (a virtualenv's or conda environment's prefix).
    #[arg(long)]
    prefix: Option<PathBuf>,
    /// The master the kernel connects to. Without it the kernel reads
    /// SPATE_MASTER when it starts, or runs a cluster of its own.
    #[arg(long)]
    master: Option<String>,
    /// The workspace the kernel saves notebooks in (and its own cluster uses).
    #[arg(long)]
    workspace: Option<spate_engine::WorkspaceLocation>,
}

pub async fn run(args: KernelArgs) -> Result<(), DriverError> {
    if let Some(KernelAction::Install(install)) = &args.action {
        let folder = install_kernelspec(install)?;
        println!(
            "installed the {DISPLAY_NAME} kernel in {}; JupyterLab lists it as \"{DISPLAY_NAME}\"",
            folder.display()
        );
        return Ok(());
    }
    let Some(file) = &args.connection_file else {
        return Err(DriverError::Usage(
            "driver kernel runs under Jupyter, which passes --connection-file FILE; \
             `driver kernel install` makes it known to Jupyter"
                .to_string(),
        ));
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| DriverError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let info: ConnectionInfo = serde_json::from_str(&text).map_err(|e| {
        DriverError::Usage(format!(
            "{} is no Jupyter connection file: {e}",
            file.display()
        ))
    })?;
    serve(&info, &args.cluster).await
}

/// Writes `kernels/spate/kernel.json` under the chosen Jupyter data folder.
fn install_kernelspec(install: &InstallArgs) -> Result<PathBuf, DriverError> {
    let data = if let Some(prefix) = &install.prefix {
        prefix.join("share/jupyter")
    } else if install.user {
        jupyter_zmq_client::dirs::user_data_dir()
            .map_err(|e| DriverError::Usage(format!("no user data folder for Jupyter: {e}")))?
    } else {
        PathBuf::from("/usr/local/share/jupyter")
    };
    let folder = data.join("kernels").join(KERNEL_NAME);
    write_kernelspec(&folder, install)?;
    Ok(folder)
}

fn write_kernelspec(folder: &Path, install: &InstallArgs) -> Result<(), DriverError> {
    let exe = std::env::current_exe()
        .map_err(|e| DriverError::Usage(format!("cannot tell where this driver is: {e}")))?;
    let mut argv = vec![
        exe.display().to_string(),
        "kernel".to_string(),
        "--connection-file".to_string(),
        "{connection_file}".to_string(),
    ];
    if let Some(master) = &install.master {
        argv.extend(["--master".to_string(), master.clone()]);
    }
    if let Some(workspace) = &install.workspace {
        // The kernel starts in the notebook's folder: a local workspace is absolute.
        let workspace = match workspace.local_root() {
            Some(root) => std::path::absolute(root)
                .unwrap_or_else(|_| root.to_path_buf())
                .display()
                .to_string(),
            None => workspace.to_string(),
        };
        argv.extend(["--workspace".to_string(), workspace]);
    }
    let spec = json!({
        "argv": argv,
        "display_name": DISPLAY_NAME,
        "language": "sql",
        "interrupt_mode": "message",
        "metadata": {"debugger": false},
    });
    std::fs::create_dir_all(folder)
        .map_err(|e| DriverError::Usage(format!("cannot create {}: {e}", folder.display())))?;
    let path = folder.join("kernel.json");
    let text = serde_json::to_string_pretty(&spec).unwrap_or_default();
    std::fs::write(&path, text + "\n")
        .map_err(|e| DriverError::Usage(format!("cannot write {}: {e}", path.display())))
}

fn protocol_error(e: jupyter_zmq_client::RuntimeError) -> DriverError {
    DriverError::Usage(format!("Jupyter channel: {e}"))
}

/// The request being answered, which the outputs belong to.
#[derive(Default)]
struct Current {
    parent: Option<JupyterMessage>,
    execution_count: usize,
    /// The last error the request showed, for its `execute_reply`.
    error: Option<String>,
}

/// What the iopub task is given: a message to publish, or a request to say
/// when everything before it has been published.
enum Publish {
    Message(Box<JupyterMessage>),
    Flushed(oneshot::Sender<()>),
}

/// The way to the iopub task.
#[derive(Clone)]
struct Iopub(mpsc::UnboundedSender<Publish>);

impl Iopub {
    fn publish(&self, content: impl Into<JupyterMessageContent>, parent: Option<&JupyterMessage>) {
        let message = JupyterMessage::new(content.into(), parent);
        let _ = self.0.send(Publish::Message(Box::new(message)));
    }

    /// Waits until what was published before is out.
    async fn flushed(&self) {
        let (done, flushed) = oneshot::channel();
        if self.0.send(Publish::Flushed(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

/// A failed cell's error, as its `error` output and `execute_reply` carry it.
fn reply_error(message: &str) -> ReplyError {
    ReplyError {
        ename: "Error".to_string(),
        evalue: message.to_string(),
        traceback: vec![format!("error: {message}")],
    }
}

/// A cell's outputs as iopub messages, children of the request.
struct NotebookConsole {
    iopub: Iopub,
    current: Arc<Mutex<Current>>,
}

impl NotebookConsole {
    fn send(&self, content: impl Into<JupyterMessageContent>) {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        self.iopub.publish(content, current.parent.as_ref());
    }

    fn error(&self, message: &str) {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).error = Some(message.to_string());
        let error = reply_error(message);
        self.send(ErrorOutput {
            ename: error.ename,
            evalue: error.evalue,
            traceback: error.traceback,
        });
    }

    fn execution_count(&self) -> ExecutionCount {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        ExecutionCount::new(current.execution_count)
    }
}

fn media(text: &str, html: Option<&str>) -> Media {
    let mut data = vec![MediaType::Plain(text.to_string())];
    if let Some(html) = html {
        data.push(MediaType::Html(html.to_string()));
    }
    Media::new(data)
}

impl Console for NotebookConsole {
    fn say(&mut self, text: &str) {
        self.send(StreamContent::stdout(&format!("{text}\n")));
    }

    fn cell(&mut self, _n: usize, _source: &str, output: &Output) {
        match output {
            Output::Result { text, html } => self.send(ExecuteResult::new(
                self.execution_count(),
                media(text, html.as_deref()),
            )),
            Output::Error(message) => self.error(message),
        }
    }

    fn fail(&mut self, message: &str) {
        self.error(message);
    }

    fn rows(&mut self, title: &str, text: &str, html: Option<&str>) {
        let text = format!("{title}\n{text}");
        let html = html.map(|table| format!("<p>{}</p>\n{table}", escape(title)));
        self.send(DisplayData::new(media(&text, html.as_deref())));
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Binds the channels, connects to the cluster and answers requests until
/// a shutdown request.
async fn serve(info: &ConnectionInfo, cluster_args: &ClusterArgs) -> Result<(), DriverError> {
    let session_id = uuid::Uuid::new_v4().to_string();
    let mut heartbeat = create_kernel_heartbeat_connection(info)
        .await
        .map_err(protocol_error)?;
    let (mut shell_out, mut shell_in) = create_kernel_shell_connection(info, &session_id)
        .await
        .map_err(protocol_error)?
        .split();
    let mut control = create_kernel_control_connection(info, &session_id)
        .await
        .map_err(protocol_error)?;
    // Cells never ask for input, but clients connect to stdin all the same.
    let _stdin = create_kernel_stdin_connection(info, &session_id)
        .await
        .map_err(protocol_error)?;
    let mut iopub = create_kernel_iopub_xpub_connection(info, &session_id)
        .await
        .map_err(protocol_error)?;

    tokio::spawn(async move { while heartbeat.single_heartbeat().await.is_ok() {} });

    // One task owns iopub: the outputs of cells in order, and a welcome for
    // each subscriber (JEP 65), so clients know when they may send.
    let (outputs, mut pending) = mpsc::unbounded_channel::<Publish>();
    let outputs = Iopub(outputs);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                message = pending.recv() => match message {
                    Some(Publish::Message(message)) => {
                        if let Err(e) = iopub.send(*message).await {
                            tracing::warn!("iopub: {e}");
                        }
                    }
                    Some(Publish::Flushed(done)) => {
                        let _ = done.send(());
                    }
                    None => break,
                },
                event = iopub.recv_subscription() => {
                    if let Ok(SubscriptionEvent::Subscribe(topic)) = event {
                        let _ = iopub.send(IoPubWelcome::new(topic).into()).await;
                        // A late subscriber (the server's activity monitor)
                        // would otherwise see "starting" until a request.
                        let _ = iopub.send(Status::idle().into()).await;
                    }
                }
            }
        }
    });

    // Control runs beside the cells: an interrupt must reach a running one.
    let interrupt = Arc::new(Notify::new());
    let (shut_down, mut shutdown) = oneshot::channel::<()>();
    let interrupts = Arc::clone(&interrupt);
    tokio::spawn(async move {
        let mut shut_down = Some(shut_down);
        while let Ok(message) = control.read().await {
            let reply = match &message.content {
                JupyterMessageContent::KernelInfoRequest(_) => kernel_info().as_child_of(&message),
                JupyterMessageContent::InterruptRequest(_) => {
                    interrupts.notify_waiters();
                    InterruptReply::new().as_child_of(&message)
                }
                JupyterMessageContent::ShutdownRequest(request) => {
                    if let Some(shut_down) = shut_down.take() {
                        let _ = shut_down.send(());
                    }
                    shutdown_reply(request.restart).as_child_of(&message)
                }
                _ => continue,
            };
            let _ = control.send(reply).await;
        }
    });

    let (client, cluster) = cluster_args.connect().await?;
    let current = Arc::new(Mutex::new(Current::default()));
    let console = NotebookConsole {
        iopub: outputs.clone(),
        current: Arc::clone(&current),
    };
    let mut repl = Repl::new(
        client,
        &cluster_args.workspace.client_folder(),
        OutputFormat::Table,
        Box::new(console),
        Interrupt::Message(interrupt),
    );
    repl.load_functions().await;
    let mut kernel = Kernel {
        repl,
        iopub: outputs,
        current,
        execution_count: 0,
    };
    tracing::info!("{}", cluster_args.banner(cluster.as_ref()));

    loop {
        let message = tokio::select! {
            message = shell_in.read() => message,
            _ = &mut shutdown => break,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("shell: {e}");
                continue;
            }
        };
        let quit = matches!(message.content, JupyterMessageContent::ShutdownRequest(_));
        if let Some(reply) = kernel.answer(&message).await
            && let Err(e) = shell_out.send(reply).await
        {
            tracing::warn!("shell: {e}");
        }
        kernel.publish(Status::idle(), &message);
        if quit {
            break;
        }
    }
    if let Some(local) = cluster {
        local.shutdown().await;
    }
    Ok(())
}

struct Kernel {
    repl: Repl,
    iopub: Iopub,
    current: Arc<Mutex<Current>>,
    execution_count: usize,
}

impl Kernel {
    fn publish(&self, content: impl Into<JupyterMessageContent>, parent: &JupyterMessage) {
        self.iopub.publish(content, Some(parent));
    }

    /// Answers one shell request, busy on iopub before it (idle follows
    /// the reply).
    async fn answer(&mut self, message: &JupyterMessage) -> Option<JupyterMessage> {
        self.publish(Status::busy(), message);
        let reply = match &message.content {
            JupyterMessageContent::KernelInfoRequest(_) => Some(kernel_info().as_child_of(message)),
            JupyterMessageContent::ExecuteRequest(request) => {
                let count = if request.silent || !request.store_history {
                    self.execution_count
                } else {
                    self.execution_count += 1;
                    self.execution_count
                };
                Some(self.execute(&request.code, count, message).await)
            }
            JupyterMessageContent::IsCompleteRequest(request) => {
                let status = if is_complete(&request.code) {
                    IsCompleteReplyStatus::Complete
                } else {
                    IsCompleteReplyStatus::Incomplete
                };
                Some(IsCompleteReply::new(status, String::new()).as_child_of(message))
            }
            JupyterMessageContent::CompleteRequest(request) => Some(
                self.complete(&request.code, request.cursor_pos)
                    .as_child_of(message),
            ),
            JupyterMessageContent::InspectRequest(request) => Some(
                self.inspect(&request.code, request.cursor_pos)
                    .await
                    .as_child_of(message),
            ),
            JupyterMessageContent::HistoryRequest(_) => {
                Some(HistoryReply::new(Vec::new()).as_child_of(message))
            }
            JupyterMessageContent::CommInfoRequest(_) => Some(
                CommInfoReply {
                    status: ReplyStatus::Ok,
                    comms: Default::default(),
                    error: None,
                }
                .as_child_of(message),
            ),
            JupyterMessageContent::ShutdownRequest(request) => {
                Some(shutdown_reply(request.restart).as_child_of(message))
            }
            _ => None,
        };
        // The reply follows the request's outputs, as clients expect.
        self.iopub.flushed().await;
        reply
    }

    async fn execute(
        &mut self,
        code: &str,
        count: usize,
        message: &JupyterMessage,
    ) -> JupyterMessage {
        self.publish(
            ExecuteInput {
                code: code.to_string(),
                execution_count: ExecutionCount::new(count),
            },
            message,
        );
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Current {
            parent: Some(message.clone()),
            execution_count: count,
            error: None,
        };
        let (_, ok) = if code.trim().is_empty() {
            (super::Flow::Continue, true)
        } else {
            self.repl.input(code).await
        };
        let error =
            std::mem::take(&mut *self.current.lock().unwrap_or_else(|p| p.into_inner())).error;
        let failed = !ok || error.is_some();
        ExecuteReply {
            status: if failed {
                ReplyStatus::Error
            } else {
                ReplyStatus::Ok
            },
            execution_count: ExecutionCount::new(count),
            payload: Vec::new(),
            user_expressions: None,
            error: failed
                .then(|| Box::new(reply_error(error.as_deref().unwrap_or("the cell failed")))),
        }
        .as_child_of(message)
    }

    fn complete(&self, code: &str, cursor: usize) -> CompleteReply {
        let pos = byte_offset(code, cursor);
        let catalog = self.repl.catalog.lock().unwrap_or_else(|p| p.into_inner());
        let (start, matches) = completions(&catalog, code, pos);
        CompleteReply {
            matches,
            cursor_start: code[..start].chars().count(),
            cursor_end: cursor,
            metadata: Default::default(),
            status: ReplyStatus::Ok,
            error: None,
        }
    }

    /// Shift-Tab: a table's columns, or what a command does.
    async fn inspect(&mut self, code: &str, cursor: usize) -> InspectReply {
        let word = word_at(code, byte_offset(code, cursor));
        let not_found = InspectReply {
            found: false,
            data: Media::default(),
            metadata: Default::default(),
            status: ReplyStatus::Ok,
            error: None,
        };
        if let Some((name, what)) = COMMANDS.iter().find(|(name, _)| *name == word) {
            return InspectReply {
                found: true,
                data: media(&format!("{name} {what}"), None),
                ..not_found
            };
        }
        let table = {
            let catalog = self.repl.catalog.lock().unwrap_or_else(|p| p.into_inner());
            catalog
                .tables
                .iter()
                .find(|t| t.eq_ignore_ascii_case(word))
                .cloned()
        };
        let Some(table) = table else {
            return not_found;
        };
        let Ok(replies) = self.repl.call(&columns_query(&table), false).await else {
            return not_found;
        };
        let Some(reply) = replies.first() else {
            return not_found;
        };
        match self.repl.result_output(reply, None) {
            Output::Result { text, html } => InspectReply {
                found: true,
                data: media(&format!("table {table}\n{text}"), html.as_deref()),
                ..not_found
            },
            Output::Error(_) => not_found,
        }
    }
}

/// The byte offset of character `chars` (Jupyter counts characters).
fn byte_offset(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

/// The identifier or `\command` around byte `pos`.
fn word_at(text: &str, pos: usize) -> &str {
    let part = |c: char| c.is_alphanumeric() || c == '_' || c == '\\';
    let start = text[..pos]
        .char_indices()
        .rev()
        .take_while(|(_, c)| part(*c))
        .last()
        .map_or(pos, |(i, _)| i);
    let end = text[pos..]
        .find(|c: char| !part(c))
        .map_or(text.len(), |n| pos + n);
    &text[start..end]
}

fn shutdown_reply(restart: bool) -> ShutdownReply {
    ShutdownReply {
        restart,
        status: ReplyStatus::Ok,
        error: None,
    }
}

fn kernel_info() -> KernelInfoReply {
    KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: "5.3".to_string(),
        implementation: "spate".to_string(),
        implementation_version: env!("CARGO_PKG_VERSION").to_string(),
        language_info: LanguageInfo {
            name: "sql".to_string(),
            version: String::new(),
            mimetype: Some("application/sql".to_string()),
            file_extension: Some(".sql".to_string()),
            pygments_lexer: Some("sql".to_string()),
            codemirror_mode: Some(CodeMirrorMode::Simple("sql".to_string())),
            nbconvert_exporter: None,
        },
        banner: "Spate SQL: statements end with ';'; \\help lists the commands".to_string(),
        help_links: Vec::new(),
        debugger: false,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_offsets_count_characters() {
        assert_eq!(byte_offset("é1", 1), 2);
        assert_eq!(word_at("SELECT * FROM sales;", 16), "sales");
        assert_eq!(word_at("\\jobs", 2), "\\jobs");
        assert_eq!(word_at("a b", 1), "a");
    }
}
