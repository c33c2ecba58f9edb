//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), compiled with
//! the `fuzzing` feature only. Each takes arbitrary bytes and must return:
//! an error is what bad input gets, a panic or a hang is a bug.

use std::sync::LazyLock;

use datafusion::execution::TaskContext;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};

use crate::codec::SpateCodec;
use crate::job::{PlanEnv, plan_job, session, statement_plan};
use crate::kafka::{KafkaSourceSpec, KafkaTableFactory};
use crate::workspace::Workspace;

/// Nothing listens there: a plan that asks Kafka is refused at once.
const NO_KAFKA: &str = "127.0.0.1:9";

/// The sample jobs of workspace/jobs, whose plans seed the codec's target.
pub const SAMPLE_JOBS: &[&str] = &[
    include_str!("../../workspace/jobs/sales_filter.sql"),
    include_str!("../../workspace/jobs/running_revenue.sql"),
    include_str!("../../workspace/jobs/sliding_revenue.sql"),
    include_str!("../../workspace/jobs/window_metrics.sql"),
    include_str!("../../workspace/jobs/running_revenue_redis.sql"),
    include_str!("../../workspace/jobs/running_revenue_postgres.sql"),
];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    env: PlanEnv,
    /// A Kafka table of each format and `on_error` policy.
    sources: Vec<KafkaSourceSpec>,
    /// The sample jobs' stage plans, encoded.
    plans: Vec<Vec<u8>>,
    _workspace: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary workspace");
    let env = PlanEnv::new(Workspace::open(dir.path()).expect("a workspace"), NO_KAFKA);
    let ctx = session(&env);
    let factory = KafkaTableFactory {
        default_bootstrap_servers: NO_KAFKA.into(),
    };
    let mut sources = Vec::new();
    for format in ["json", "csv", "raw"] {
        for on_error in ["fail", "drop", "permissive"] {
            let columns = match format {
                "raw" => "",
                _ => "(id BIGINT, customer VARCHAR, revenue DOUBLE, ts TIMESTAMP, ok BOOLEAN)",
            };
            let ddl = format!(
                "CREATE EXTERNAL TABLE t {columns} STORED AS KAFKA LOCATION 'sales' \
                 OPTIONS ('format' '{format}', 'on_error' '{on_error}')"
            );
            let plan = runtime
                .block_on(statement_plan(&ctx, &ddl))
                .unwrap_or_else(|e| panic!("{ddl}: {e}"));
            let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) = plan else {
                panic!("{ddl} is no CREATE EXTERNAL TABLE");
            };
            sources.push(factory.source_spec(&create).expect("a Kafka table"));
        }
    }
    let mut plans = Vec::new();
    for sql in SAMPLE_JOBS {
        let planned = runtime
            .block_on(plan_job(&env, sql, "fuzz"))
            .unwrap_or_else(|e| panic!("a sample job does not plan: {e}"));
        plans.extend(planned.stages.into_iter().map(|s| s.plan));
    }
    Fixture {
        runtime,
        env,
        sources,
        plans,
        _workspace: dir,
    }
});

/// Kafka record values decoded by a table of each format and `on_error`
/// policy: the first byte picks the table, the rest are the records'
/// values, separated by 0xFF (a byte UTF-8 never holds).
pub fn decode_records(data: &[u8]) {
    let Some((&table, values)) = data.split_first() else {
        return;
    };
    let fixture = &*FIXTURE;
    let spec = &fixture.sources[table as usize % fixture.sources.len()];
    crate::kafka::decode_for_fuzzing(spec, values.split(|b| *b == 0xFF));
}

/// SQL as `driver submit` sends it (a job) and as the REPL sends a
/// statement (classified by planning it, not run).
pub fn plan_sql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fixture = &*FIXTURE;
    let _ = fixture
        .runtime
        .block_on(plan_job(&fixture.env, text, "fuzz"));
    let ctx = session(&fixture.env);
    let _ = fixture.runtime.block_on(statement_plan(&ctx, text));
}

/// Plan bytes as a worker receives them: `data` as they are, and one of
/// the sample jobs' plans with `data` written over it (pairs of a
/// position and a byte, then a length to cut it to), to reach past the
/// outer messages.
pub fn decode_plan(data: &[u8]) {
    let fixture = &*FIXTURE;
    let codec = SpateCodec::for_task(Vec::new());
    let ctx = TaskContext::default();
    let _ = codec.decode_plan(data, &ctx);
    let Some((&which, edits)) = data.split_first() else {
        return;
    };
    let mut plan = fixture.plans[which as usize % fixture.plans.len()].clone();
    let mut pairs = edits.chunks_exact(3);
    for edit in &mut pairs {
        let at = u16::from_le_bytes([edit[0], edit[1]]) as usize;
        if let Some(byte) = plan.get_mut(at) {
            *byte = edit[2];
        }
    }
    if let [a, b] = pairs.remainder() {
        plan.truncate(u16::from_le_bytes([*a, *b]) as usize);
    }
    let _ = codec.decode_plan(&plan, &ctx);
}
