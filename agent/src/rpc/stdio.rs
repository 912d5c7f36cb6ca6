//! Process stdio: the shim's read/write loops.

use protobuf::well_known_types::empty::Empty;

use super::{Agent, AgentError, Result};
use crate::process::Stream;
use crate::protocols::agent;

impl Agent {
    async fn read_stream(
        &self,
        req: agent::ReadStreamRequest,
        which: Stream,
    ) -> Result<agent::ReadStreamResponse> {
        let (_, p) = self.process(&req.container_id, &req.exec_id).await?;
        let data = p.io.read(which, req.len as usize).await?;
        let mut r = agent::ReadStreamResponse::new();
        r.data = data;
        Ok(r)
    }

    pub(super) async fn read_stdout(
        &self,
        req: agent::ReadStreamRequest,
    ) -> Result<agent::ReadStreamResponse> {
        self.read_stream(req, Stream::Stdout).await
    }

    pub(super) async fn read_stderr(
        &self,
        req: agent::ReadStreamRequest,
    ) -> Result<agent::ReadStreamResponse> {
        self.read_stream(req, Stream::Stderr).await
    }

    pub(super) async fn write_stdin(
        &self,
        req: agent::WriteStreamRequest,
    ) -> Result<agent::WriteStreamResponse> {
        let (_, p) = self.process(&req.container_id, &req.exec_id).await?;
        let n = p.io.write_stdin(&req.data).await?;
        let mut r = agent::WriteStreamResponse::new();
        r.len = u32::try_from(n).unwrap_or(u32::MAX);
        Ok(r)
    }

    pub(super) async fn close_stdin(&self, req: agent::CloseStdinRequest) -> Result<Empty> {
        let (_, p) = self.process(&req.container_id, &req.exec_id).await?;
        p.io.close_stdin().await;
        Ok(Empty::new())
    }

    pub(super) async fn tty_win_resize(&self, req: agent::TtyWinResizeRequest) -> Result<Empty> {
        let (_, p) = self.process(&req.container_id, &req.exec_id).await?;
        let dim =
            |v: u32| u16::try_from(v).map_err(|_| AgentError::InvalidArgument(format!("size {v}")));
        p.io.resize(dim(req.row)?, dim(req.column)?)
            .map_err(|e| AgentError::FailedPrecondition(format!("{}: {e}", p.exec_id)))?;
        Ok(Empty::new())
    }
}
