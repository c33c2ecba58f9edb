//! Arrow IPC bytes of batches, as the shuffle, the state and the results
//! files hold them.
//!
//! A string or binary view array (`VARCHAR` is `Utf8View` in DataFusion)
//! that came out of a `take`, a filter or a join points into the buffers
//! of the batches it was taken from, and IPC writes those buffers whole:
//! every 8,192 pairs a join wrote carried all the strings of its inputs
//! (Nexmark q9 wrote 24 GB of shuffle for 400,000 events). So such arrays
//! are compacted first, where their buffers hold much more than they use.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc::writer::FileWriter;

use crate::error::Result;

/// Arrow IPC file bytes of `batches`, their view arrays compacted.
pub fn file(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut writer = FileWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(&compacted(batch)?)?;
    }
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// `batch` with each view array whose buffers hold more than twice the
/// bytes its rows use copied into buffers of its own; as it is otherwise.
pub fn compacted(batch: &RecordBatch) -> Result<RecordBatch> {
    let wasteful = |column: &ArrayRef| {
        let (held, used) = match column.data_type() {
            DataType::Utf8View => {
                let views = column.as_string_view();
                (
                    buffers_len(views.data_buffers()),
                    views.total_buffer_bytes_used(),
                )
            }
            DataType::BinaryView => {
                let views = column.as_binary_view();
                (
                    buffers_len(views.data_buffers()),
                    views.total_buffer_bytes_used(),
                )
            }
            _ => return false,
        };
        held > 2 * used + 4096
    };
    let mut compacted = false;
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if !wasteful(column) {
                return Arc::clone(column);
            }
            compacted = true;
            match column.data_type() {
                DataType::Utf8View => Arc::new(column.as_string_view().gc()) as ArrayRef,
                _ => Arc::new(column.as_binary_view().gc()),
            }
        })
        .collect();
    if !compacted {
        return Ok(batch.clone());
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

fn buffers_len(buffers: &[datafusion::arrow::buffer::Buffer]) -> usize {
    buffers.iter().map(|b| b.len()).sum()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::StringViewArray;
    use datafusion::arrow::compute::take;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    /// A few rows taken from many long strings are written without the
    /// strings they do not hold.
    #[test]
    fn view_arrays_taken_from_big_buffers_are_written_small() {
        let long: Vec<String> = (0..10_000).map(|i| format!("{i:0>100}")).collect();
        let all = StringViewArray::from_iter_values(long.iter());
        let few = take(
            &all,
            &datafusion::arrow::array::UInt32Array::from(vec![3, 7]),
            None,
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![few]).unwrap();
        let bytes = file(&schema, std::slice::from_ref(&batch)).unwrap();
        assert!(
            bytes.len() < 10_000,
            "{} bytes for two strings",
            bytes.len()
        );
        let back =
            datafusion::arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
        assert_eq!(back, batch);
    }
}
