//! `driver repl`: an interactive, notebook-style SQL shell on the cluster.
//!
//! Each statement is a cell: `[n]>` asks for it, `Out[n]` answers. Queries
//! run on the workers (the master plans them with the session's earlier
//! DDL, which this shell keeps and sends along); `INSERT INTO ... SELECT`
//! starts a streaming job; `\save` writes the cells and their outputs as a
//! Jupyter notebook. Without `--master` the shell runs its own cluster in
//! this process, as the demo does.

mod console;
mod helper;
pub mod kernel;
mod notebook;
mod render;

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use rustyline::error::ReadlineError;
use rustyline::hint::HistoryHinter;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};
use spate_proto::dial::Client;
use spate_proto::{
    ListJobsRequest, ListWorkersRequest, ResultEnd, RunStatementRequest, StopJobRequest,
    SubmitJobRequest, TailJobRequest, statement_reply,
};

use crate::DriverError;
use crate::local::{LocalCluster, LocalKafka, LocalOptions};
use console::{Console, Interrupt, Terminal};
use helper::{COMMANDS, Catalog, ReplHelper, split_statements};
use notebook::{Cell, Output};
use render::{Limits, OutputFormat};

/// Which cluster a session runs on: `--master`, or one of its own.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The master's gRPC URL. Without it the session runs its own cluster
    /// (a master and workers in this process), as the demo does.
    #[arg(long, env = "SPATE_MASTER")]
    pub master: Option<String>,
    /// Shared secret, when the master has one.
    #[arg(long, env = "SPATE_SECRET", hide_env_values = true, hide_default_value = true,
          default_value_t = spate_config::settings().secret.clone())]
    pub secret: String,
    #[command(flatten)]
    pub tls: crate::TlsArgs,
    /// The workspace the session's own cluster shares: a folder or
    /// s3://bucket/prefix. Notebooks are saved under its notebooks/ folder
    /// (the current directory's, on S3).
    #[arg(long, env = "SPATE_WORKSPACE", default_value = "workspace")]
    pub workspace: spate_engine::WorkspaceLocation,
    /// Kafka that Kafka tables without 'bootstrap.servers' use (the session's own cluster).
    #[arg(long, env = "SPATE_KAFKA_BOOTSTRAP", default_value = "localhost:9092")]
    pub bootstrap: String,
    /// Run the development Kafka broker too, with a 'sales' topic fed by
    /// the sales generator (the session's own cluster), instead of --bootstrap.
    #[arg(long)]
    pub kafka: bool,
    /// With --kafka: generated sales records per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Workers of the session's own cluster.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// gRPC address of the session's own master.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// Web UI address of the session's own master (another port is taken when busy).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub ui_bind: SocketAddr,
}

impl ClusterArgs {
    /// Where the session's own cluster logs; None on a cluster of its own.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.master
            .is_none()
            .then(|| self.workspace.client_folder().join("_spate/logs/repl.log"))
    }

    /// Connects to `--master`, or starts the session's own cluster and
    /// connects to it (then also returned, to be shut down at the end).
    pub(crate) async fn connect(&self) -> Result<(Client, Option<LocalCluster>), DriverError> {
        let mut cluster = None;
        let master_url = match &self.master {
            Some(url) => url.clone(),
            None => {
                let local = start_local(self).await?;
                let url = local.master_url.clone();
                cluster = Some(local);
                url
            }
        };
        // The session's own cluster serves plain gRPC on loopback.
        let ca = self.master.as_ref().and(self.tls.ca.as_deref());
        let client = crate::connect(&master_url, ca, &self.secret).await?;
        Ok((client, cluster))
    }

    /// A line that says where the session runs.
    pub(crate) fn banner(&self, cluster: Option<&LocalCluster>) -> String {
        match (cluster, &self.master) {
            (Some(local), _) => format!(
                "Spate on its own cluster: {} workers, master {}, web UI http://{}, Kafka {} (logs: {})",
                self.workers,
                local.master_url,
                local.master.http_addr,
                local.bootstrap,
                self.log_file().unwrap_or_default().display()
            ),
            (None, Some(url)) => format!("Spate on the cluster at {url}"),
            (None, None) => String::new(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ReplArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Run the statements and commands of this file, print their results and exit.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// How results print.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Where the statement history is kept (Ctrl-R searches it).
    #[arg(long, env = "SPATE_HISTORY")]
    history: Option<PathBuf>,
}

pub async fn run(args: ReplArgs) -> Result<(), DriverError> {
    let (client, cluster) = args.cluster.connect().await?;
    let interactive = args.file.is_none();
    let mut repl = Repl::new(
        client,
        &args.cluster.workspace.client_folder(),
        args.format,
        Box::new(Terminal { echo: !interactive }),
        Interrupt::CtrlC,
    );
    repl.interactive = interactive;
    repl.load_functions().await;
    let ran = match &args.file {
        Some(file) => repl.run_script(file).await,
        None => {
            println!("{}", args.cluster.banner(cluster.as_ref()));
            println!(
                "Statements end with ';'. \\help lists commands; Tab completes; Ctrl-R searches history; Ctrl-D leaves."
            );
            repl.prompt_loop(history_path(&args)).await
        }
    };
    if let Some(local) = cluster {
        local.shutdown().await;
    }
    ran
}

async fn start_local(args: &ClusterArgs) -> Result<LocalCluster, DriverError> {
    let kafka = if args.kafka {
        LocalKafka::dev_with_sales()?
    } else {
        LocalKafka::External(args.bootstrap.clone())
    };
    // The UI's port may be taken (a demo or another session): any port will do.
    let mut http = args.ui_bind;
    if std::net::TcpListener::bind(http).is_err() {
        http.set_port(0);
    }
    let mut local = LocalCluster::start(LocalOptions {
        workspace: &args.workspace,
        grpc: args.bind,
        http,
        workers: args.workers,
        kafka,
    })
    .await?;
    if args.kafka {
        local.generate_sales("sales", args.rate);
    }
    Ok(local)
}

fn history_path(args: &ReplArgs) -> PathBuf {
    args.history.clone().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".spate_history")
    })
}

/// One statement's results, as they came back.
pub(crate) struct Reply {
    pub end: ResultEnd,
    pub rows: Option<(SchemaRef, Vec<RecordBatch>)>,
}

/// Why a cell did not give its result.
pub(crate) enum CellError {
    Failed(String),
    Cancelled,
}

impl CellError {
    /// What the cell shows.
    pub fn message(self) -> String {
        match self {
            CellError::Failed(message) => message,
            CellError::Cancelled => "cancelled".to_string(),
        }
    }
}

impl From<tonic::Status> for CellError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unavailable => {
                CellError::Failed(format!("the master is unreachable: {}", status.message()))
            }
            _ => CellError::Failed(status.message().to_string()),
        }
    }
}

/// A line of the session's output, through its console.
macro_rules! say {
    ($repl:expr, $($arg:tt)*) => {
        $repl.console.say(&format!($($arg)*))
    };
}

/// Whether the session goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

struct Repl {
    client: Client,
    /// The DDL and SET statements run so far, sent with every statement.
    session: Vec<String>,
    /// What `\save` writes.
    cells: Vec<Cell>,
    /// The next cell's number.
    next: usize,
    format: OutputFormat,
    limits: Limits,
    catalog: Arc<Mutex<Catalog>>,
    workspace: PathBuf,
    /// The notebook `\load` opened, where a bare `\save` writes.
    notebook: Option<PathBuf>,
    /// A person types the cells (the terminal's prompt, a notebook), as
    /// opposed to a script.
    interactive: bool,
    console: Box<dyn Console>,
    interrupt: Interrupt,
}

impl Repl {
    pub(crate) fn new(
        client: Client,
        workspace: &Path,
        format: OutputFormat,
        console: Box<dyn Console>,
        interrupt: Interrupt,
    ) -> Self {
        Repl {
            client,
            session: Vec::new(),
            cells: Vec::new(),
            next: 1,
            format,
            limits: Limits {
                max_rows: 40,
                max_width: 40,
            },
            catalog: Arc::default(),
            workspace: workspace.to_path_buf(),
            notebook: None,
            interactive: true,
            console,
            interrupt,
        }
    }

    async fn prompt_loop(&mut self, history: PathBuf) -> Result<(), DriverError> {
        loop {
            // An editor per prompt: while one lives, rustyline owns SIGINT,
            // and Ctrl-C must reach a running query or `\tail` instead.
            let mut editor = self.editor(&history)?;
            let prompt = format!("[{}]> ", self.next);
            let line = tokio::task::block_in_place(|| editor.readline(&prompt));
            match line {
                Ok(input) => {
                    if input.trim().is_empty() {
                        continue;
                    }
                    let _ = editor.add_history_entry(input.trim());
                    let _ = editor.save_history(&history);
                    drop(editor);
                    if self.input(&input).await.0 == Flow::Quit {
                        break;
                    }
                }
                // Ctrl-C at the prompt drops the line, as in a shell.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(DriverError::Usage(format!("terminal: {e}"))),
            }
        }
        Ok(())
    }

    fn editor(&self, history: &Path) -> Result<Editor<ReplHelper, FileHistory>, DriverError> {
        let config = Config::builder()
            .auto_add_history(false)
            .completion_type(CompletionType::List)
            .max_history_size(10_000)
            .map_err(|e| DriverError::Usage(e.to_string()))?
            .build();
        let mut editor: Editor<ReplHelper, FileHistory> =
            Editor::with_config(config).map_err(|e| DriverError::Usage(e.to_string()))?;
        editor.set_helper(Some(ReplHelper {
            catalog: Arc::clone(&self.catalog),
            color: std::env::var_os("NO_COLOR").is_none(),
            hinter: HistoryHinter::new(),
        }));
        let _ = editor.load_history(history);
        Ok(editor)
    }

    /// Runs a file of statements and commands, stopping at the first failure.
    async fn run_script(&mut self, file: &Path) -> Result<(), DriverError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| DriverError::Usage(format!("cannot read {}: {e}", file.display())))?;
        match self.run_text(&text).await.1 {
            Ok(()) => Ok(()),
            Err(line) => Err(DriverError::Usage(format!(
                "{}: stopped at the statement on line {line}, which failed",
                file.display()
            ))),
        }
    }

    /// One input of the prompt or a notebook's cell.
    async fn input(&mut self, input: &str) -> (Flow, bool) {
        let (flow, ran) = self.run_text(input).await;
        (flow, ran.is_ok())
    }

    /// Runs statements and `\commands` (a command is its line), in order,
    /// stopping at the first that fails; Err holds the line it began on.
    async fn run_text(&mut self, text: &str) -> (Flow, Result<(), usize>) {
        let mut pending = String::new();
        let mut pending_line = 1;
        for (number, line) in text.lines().enumerate() {
            if pending.trim().is_empty() {
                pending_line = number + 1;
                if line.trim_start().starts_with('\\') {
                    let (flow, ok) = self.command(line.trim()).await;
                    if !ok {
                        return (flow, Err(number + 1));
                    }
                    if flow == Flow::Quit {
                        return (flow, Ok(()));
                    }
                    pending.clear();
                    continue;
                }
            }
            pending.push_str(line);
            pending.push('\n');
            let (statements, rest) = split_statements(&pending);
            if !statements.is_empty() {
                for statement in statements {
                    if !self.statement(&statement).await {
                        return (Flow::Continue, Err(pending_line));
                    }
                }
                pending = rest;
                pending_line = number + 1;
            }
        }
        if !pending.trim().is_empty() && !self.statement(pending.trim()).await {
            return (Flow::Continue, Err(pending_line));
        }
        (Flow::Continue, Ok(()))
    }

    /// Runs one SQL statement as a cell; false when it failed.
    async fn statement(&mut self, statement: &str) -> bool {
        let started = Instant::now();
        let ran = self.call(statement, false).await;
        let elapsed = started.elapsed().as_secs_f64();
        let output = match ran {
            Ok(replies) => {
                let mut output = Output::Result {
                    text: String::new(),
                    html: None,
                };
                for reply in replies {
                    if reply.end.session_statement {
                        self.session.push(statement.to_string());
                        self.refresh_catalog().await;
                    }
                    output = self.result_output(&reply, Some(elapsed));
                }
                output
            }
            Err(e) => Output::Error(e.message()),
        };
        self.cell(statement, output)
    }

    /// Prints a cell's output under its number and keeps it for `\save`.
    fn cell(&mut self, source: &str, output: Output) -> bool {
        let n = self.next;
        self.next += 1;
        self.console.cell(n, source, &output);
        let ok = matches!(output, Output::Result { .. });
        self.cells.push(Cell {
            execution_count: n,
            source: source.to_string(),
            output,
        });
        ok
    }

    /// A result as the cell shows it.
    fn result_output(&self, reply: &Reply, elapsed: Option<f64>) -> Output {
        let Some((schema, batches)) = &reply.rows else {
            return Output::Result {
                text: reply.end.message.clone(),
                html: None,
            };
        };
        let rows = reply.end.rows;
        let mut text = match render::render(schema, batches, self.format, self.limits) {
            Ok(text) => text,
            Err(e) => return Output::Error(format!("cannot show the result: {e}")),
        };
        let mut footer = format!("{rows} row{}", if rows == 1 { "" } else { "s" });
        if let Some(seconds) = elapsed {
            footer.push_str(&format!(" in {seconds:.3} s"));
        }
        if reply.end.stages > 0 {
            footer.push_str(&format!(
                " ({} stage{}, {} task{} on the workers)",
                reply.end.stages,
                if reply.end.stages == 1 { "" } else { "s" },
                reply.end.tasks,
                if reply.end.tasks == 1 { "" } else { "s" }
            ));
        }
        if self.format == OutputFormat::Table {
            text.push('\n');
            text.push_str(&footer);
        }
        let html = render::html(schema, batches, self.limits).ok();
        Output::Result { text, html }
    }

    /// Sends a statement with the session and collects its results;
    /// Ctrl-C abandons it.
    async fn call(&mut self, statement: &str, explain: bool) -> Result<Vec<Reply>, CellError> {
        let request = RunStatementRequest {
            session: self.session.clone(),
            statement: statement.to_string(),
            explain,
        };
        let mut client = self.client.clone();
        let collect = async move {
            let mut stream = client.run_statement(request).await?.into_inner();
            collect_replies(&mut stream, |_| {}).await
        };
        tokio::select! {
            replies = collect => replies,
            _ = self.interrupt.wait() => Err(CellError::Cancelled),
        }
    }

    async fn command(&mut self, line: &str) -> (Flow, bool) {
        let (name, argument) = match line.split_once(char::is_whitespace) {
            Some((name, argument)) => (name, argument.trim()),
            None => (line, ""),
        };
        let ran = match name {
            "\\q" | "\\quit" | "\\exit" => return (Flow::Quit, true),
            "\\help" | "\\?" | "\\h" => {
                self.console.say(&help());
                Ok(())
            }
            "\\jobs" => self.jobs(line).await,
            "\\workers" => self.workers(line).await,
            "\\stop" => self.stop(argument).await,
            "\\submit" => self.submit(argument).await,
            "\\explain" => self.explain(line, argument).await,
            "\\d" => self.describe(line, argument).await,
            "\\set" => self.set(argument),
            "\\save" => self.save(argument),
            "\\load" => self.load(argument),
            "\\run" => return self.run_notebook(argument).await,
            "\\tail" => self.tail(argument).await,
            other => Err(format!(
                "unknown command {other}; \\help lists the commands"
            )),
        };
        match ran {
            Ok(()) => (Flow::Continue, true),
            Err(message) => {
                if !message.is_empty() {
                    self.console.fail(&message);
                }
                (Flow::Continue, false)
            }
        }
    }

    async fn jobs(&mut self, line: &str) -> Result<(), String> {
        let jobs = self
            .client
            .list_jobs(ListJobsRequest {})
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner()
            .jobs;
        let text = if jobs.is_empty() {
            "no jobs yet; INSERT INTO a table SELECT ... starts one".to_string()
        } else {
            crate::jobs_table(&jobs).to_string()
        };
        self.command_cell(line, text);
        Ok(())
    }

    async fn workers(&mut self, line: &str) -> Result<(), String> {
        let workers = self
            .client
            .list_workers(ListWorkersRequest {})
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner()
            .workers;
        self.command_cell(line, crate::workers_table(&workers).to_string());
        Ok(())
    }

    /// A command whose output belongs in the notebook.
    fn command_cell(&mut self, line: &str, text: String) {
        self.cell(line, Output::Result { text, html: None });
    }

    async fn stop(&mut self, argument: &str) -> Result<(), String> {
        let mut words = argument.split_whitespace();
        let job = words
            .next()
            .ok_or("\\stop JOB [--kill]: which job? (\\jobs lists them)")?;
        let kill = words.any(|w| w == "--kill");
        self.client
            .stop_job(StopJobRequest {
                job_id: job.to_string(),

                kill,
            })
            .await
            .map_err(|s| s.message().to_string())?;
        say!(
            self,
            "stopping job {job}{}; submitting it again resumes it",
            if kill {
                " now"
            } else {
                " after its running batch"
            }
        );
        Ok(())
    }

    async fn submit(&mut self, argument: &str) -> Result<(), String> {
        if argument.is_empty() {
            return Err("\\submit FILE: which job file?".to_string());
        }
        let path = Path::new(argument);
        let sql = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let submitted = self
            .client
            .submit_job(SubmitJobRequest {
                sql,
                name,

                ..Default::default()
            })
            .await
            .map_err(|s| format!("{argument}: {}", s.message()))?
            .into_inner();
        say!(
            self,
            "job {} {}",
            submitted.job_id,
            if submitted.resumed {
                "resumed from its checkpoint"
            } else {
                "started"
            }
        );
        Ok(())
    }

    async fn explain(&mut self, line: &str, argument: &str) -> Result<(), String> {
        let statement = argument.trim().trim_end_matches(';').trim();
        if statement.is_empty() {
            return Err("\\explain STATEMENT: which statement?".to_string());
        }
        let output = match self.call(statement, true).await {
            Ok(replies) => Output::Result {
                text: replies
                    .iter()
                    .map(|r| r.end.message.trim_end())
                    .collect::<Vec<_>>()
                    .join("\n"),
                html: None,
            },
            Err(e) => Output::Error(e.message()),
        };
        if self.cell(line, output) {
            Ok(())
        } else {
            // The cell printed the error.
            Err(String::new())
        }
    }

    async fn describe(&mut self, line: &str, table: &str) -> Result<(), String> {
        let table = table.trim_end_matches(';');
        let query = if table.is_empty() {
            "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY table_name"
                .to_string()
        } else {
            columns_query(table)
        };
        let replies = self.call(&query, false).await.map_err(CellError::message)?;
        let Some(reply) = replies.into_iter().next() else {
            return Err("the master sent no result".to_string());
        };
        if reply.end.rows == 0 {
            let text = if table.is_empty() {
                "no tables yet; CREATE EXTERNAL TABLE ... STORED AS KAFKA | PARQUET | JSON | CSV makes one".to_string()
            } else {
                return Err(format!(
                    "no table '{table}' in this session (\\d lists them)"
                ));
            };
            self.command_cell(line, text);
            return Ok(());
        }
        let output = self.result_output(&reply, None);
        self.cell(line, output);
        Ok(())
    }

    fn set(&mut self, argument: &str) -> Result<(), String> {
        let mut words = argument.split_whitespace();
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            if !argument.is_empty() {
                return Err("\\set NAME VALUE, e.g. \\set format csv".to_string());
            }
            say!(self, "format     {}", self.format.name());
            say!(self, "max_rows   {}", self.limits.max_rows);
            say!(self, "max_width  {}", self.limits.max_width);
            for statement in self.session.iter().filter(|s| {
                s.trim_start()
                    .get(..3)
                    .is_some_and(|w| w.eq_ignore_ascii_case("set"))
            }) {
                say!(self, "{statement}");
            }
            return Ok(());
        };
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!(
                    "\\set {name}: expected a positive number, got '{value}'"
                ))
        };
        match name {
            "format" => {
                self.format = OutputFormat::parse(value).ok_or(format!(
                    "\\set format: expected table, csv or json, got '{value}'"
                ))?
            }
            "max_rows" => self.limits.max_rows = number()?,
            "max_width" => self.limits.max_width = number()?.max(2),
            other => {
                return Err(format!(
                    "\\set {other}: unknown; the REPL has format, max_rows and max_width (SQL's SET sets session and job options)"
                ));
            }
        }
        say!(self, "{name} = {value}");
        Ok(())
    }

    fn save(&mut self, argument: &str) -> Result<(), String> {
        let path = match (argument.is_empty(), &self.notebook) {
            (false, _) => notebook::resolve(argument, &self.workspace),
            (true, Some(path)) => path.clone(),
            (true, None) => return Err("\\save FILE.ipynb: which file?".to_string()),
        };
        notebook::save(&path, &self.cells).map_err(|e| e.to_string())?;
        say!(
            self,
            "saved {} cells to {}",
            self.cells.len(),
            path.display()
        );
        self.notebook = Some(path);
        Ok(())
    }

    fn load(&mut self, argument: &str) -> Result<(), String> {
        if argument.is_empty() {
            return Err("\\load FILE.ipynb: which notebook?".to_string());
        }
        let path = notebook::resolve(argument, &self.workspace);
        let cells = notebook::load(&path).map_err(|e| e.to_string())?;
        for (source, output) in cells {
            let n = self.next;
            self.next += 1;
            say!(self, "[{n}]> {}", spate_engine::redact::sql(&source));
            if let Some(text) = &output {
                say!(self, "Out[{n}] (saved):\n{text}");
            }
            self.cells.push(Cell {
                execution_count: n,
                source,
                output: Output::Result {
                    text: output.unwrap_or_default(),
                    html: None,
                },
            });
        }
        say!(
            self,
            "loaded {}; its statements have not run in this session (\\run runs them)",
            path.display()
        );
        self.notebook = Some(path);
        Ok(())
    }

    async fn run_notebook(&mut self, argument: &str) -> (Flow, bool) {
        if argument.is_empty() {
            self.console.fail("\\run FILE.ipynb: which notebook?");
            return (Flow::Continue, false);
        }
        let path = notebook::resolve(argument, &self.workspace);
        let cells = match notebook::load(&path) {
            Ok(cells) => cells,
            Err(e) => {
                self.console.fail(&e.to_string());
                return (Flow::Continue, false);
            }
        };
        for (source, _) in cells {
            if self.interactive {
                say!(
                    self,
                    "[{}]> {}",
                    self.next,
                    spate_engine::redact::sql(&source)
                );
            }
            let (flow, ok) = Box::pin(self.input(&source)).await;
            if flow == Flow::Quit || !ok {
                if !ok {
                    say!(self, "stopped {}: a cell failed", path.display());
                }
                return (flow, ok);
            }
        }
        (Flow::Continue, true)
    }

    async fn tail(&mut self, job: &str) -> Result<(), String> {
        if job.is_empty() {
            return Err("\\tail JOB: which job? (\\jobs lists them)".to_string());
        }
        let mut client = self.client.clone();
        let request = TailJobRequest {
            job_id: job.to_string(),
            from_batch: -1,
        };
        let mut stream = client
            .tail_job(request)
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        say!(
            self,
            "following job {job}'s committed rows; {}",
            self.interrupt.how()
        );
        let (format, limits) = (self.format, self.limits);
        let console = &mut self.console;
        let follow = collect_replies(&mut stream, |reply| {
            if reply.end.title.is_empty() {
                console.say(&reply.end.message);
                return;
            }
            let title = format!("{}: {} rows", reply.end.title, reply.end.rows);
            let (text, html) = match &reply.rows {
                Some((schema, batches)) => (
                    render::render(schema, batches, format, limits).unwrap_or_default(),
                    render::html(schema, batches, limits).ok(),
                ),
                None => (String::new(), None),
            };
            console.rows(&title, &text, html.as_deref());
        });
        tokio::select! {
            ended = follow => match ended {
                Ok(_) => Ok(()),
                Err(CellError::Failed(message)) => Err(message),
                Err(CellError::Cancelled) => Ok(()),
            },
            _ = self.interrupt.wait() => {
                self.console.say(&format!("stopped following {job}"));
                Ok(())
            }
        }
    }

    /// Tables and columns of the session, for completion.
    async fn refresh_catalog(&mut self) {
        let query = "SELECT table_name, column_name FROM information_schema.columns \
                     WHERE table_schema = 'public'";
        let Ok(replies) = self.call(query, false).await else {
            return;
        };
        let mut catalog = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        catalog.tables.clear();
        catalog.columns.clear();
        for batch in replies
            .iter()
            .filter_map(|r| r.rows.as_ref())
            .flat_map(|(_, b)| b)
        {
            let (Some(tables), Some(columns)) = (strings(batch, 0), strings(batch, 1)) else {
                continue;
            };
            for row in 0..batch.num_rows() {
                catalog.tables.insert(tables.value(row).to_string());
                catalog.columns.insert(columns.value(row).to_string());
            }
        }
    }

    /// Function names, for completion; once, as they do not change.
    async fn load_functions(&mut self) {
        let query = "SELECT DISTINCT routine_name FROM information_schema.routines";
        let Ok(replies) = self.call(query, false).await else {
            return;
        };
        let mut catalog = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        for batch in replies
            .iter()
            .filter_map(|r| r.rows.as_ref())
            .flat_map(|(_, b)| b)
        {
            if let Some(names) = strings(batch, 0) {
                catalog
                    .functions
                    .extend(names.iter().flatten().map(str::to_string));
            }
        }
    }
}

/// The query that lists a table's columns.
fn columns_query(table: &str) -> String {
    format!(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = '{}' ORDER BY ordinal_position",
        table.replace('\'', "''")
    )
}

fn strings(batch: &RecordBatch, column: usize) -> Option<StringArray> {
    let array = batch.columns().get(column)?;
    let array =
        datafusion::arrow::compute::cast(array, &datafusion::arrow::datatypes::DataType::Utf8)
            .ok()?;
    array.as_any().downcast_ref::<StringArray>().cloned()
}

/// Reads a reply stream: Arrow chunks make up each result until its end.
/// `each` sees every result as it completes.
pub(crate) async fn collect_replies(
    stream: &mut tonic::Streaming<spate_proto::StatementReply>,
    mut each: impl FnMut(&Reply),
) -> Result<Vec<Reply>, CellError> {
    let mut replies = Vec::new();
    let mut buffer = Vec::new();
    while let Some(message) = stream.message().await? {
        match message.kind {
            Some(statement_reply::Kind::Arrow(chunk)) => buffer.extend_from_slice(&chunk),
            Some(statement_reply::Kind::End(end)) => {
                let rows = if buffer.is_empty() {
                    None
                } else {
                    let reader =
                        StreamReader::try_new(Cursor::new(std::mem::take(&mut buffer)), None)
                            .map_err(|e| CellError::Failed(format!("undecodable result: {e}")))?;
                    let schema = reader.schema();
                    let batches = reader
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| CellError::Failed(format!("undecodable result: {e}")))?;
                    Some((schema, batches))
                };
                let reply = Reply { end, rows };
                each(&reply);
                replies.push(reply);
            }
            None => {}
        }
    }
    Ok(replies)
}

fn help() -> String {
    let mut text = String::from(
        "SQL statements end with ';' and may span lines. SELECTs run on the workers (a Kafka table reads \
         what the topic holds now); CREATE EXTERNAL TABLE and SET belong to the session; \
         INSERT INTO ... SELECT starts a streaming job.\n",
    );
    for (name, what) in COMMANDS {
        text.push_str(&format!("  {name:<10} {what}\n"));
    }
    text.trim_end().to_string()
}
