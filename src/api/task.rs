//! A task's `status`, as TapData spells it, and which of them mean "a thread runs it".

use std::fmt;

/// TapData's task states. Unknown spellings are kept, so a document round-trips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    Edit,
    WaitStart,
    Scheduling,
    ScheduleFailed,
    WaitRun,
    Running,
    Stopping,
    Stop,
    Complete,
    Error,
    Other(String),
}

impl TaskStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "edit" | "" => Self::Edit,
            "wait_start" => Self::WaitStart,
            "scheduling" => Self::Scheduling,
            "schedule_failed" => Self::ScheduleFailed,
            "wait_run" => Self::WaitRun,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "stop" => Self::Stop,
            "complete" => Self::Complete,
            "error" => Self::Error,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Edit => "edit",
            Self::WaitStart => "wait_start",
            Self::Scheduling => "scheduling",
            Self::ScheduleFailed => "schedule_failed",
            Self::WaitRun => "wait_run",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stop => "stop",
            Self::Complete => "complete",
            Self::Error => "error",
            Self::Other(s) => s,
        }
    }

    /// The states in which a flow thread is supposed to run.
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Scheduling | Self::WaitRun | Self::Running | Self::Stopping)
    }

    /// The states from which a start is accepted.
    pub fn can_start(&self) -> bool {
        matches!(self, Self::WaitStart | Self::Stop | Self::Complete | Self::Error | Self::ScheduleFailed)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_spelling() {
        for s in [
            "edit",
            "wait_start",
            "scheduling",
            "schedule_failed",
            "wait_run",
            "running",
            "stopping",
            "stop",
            "complete",
            "error",
            "renewing",
        ] {
            assert_eq!(TaskStatus::parse(s).as_str(), s);
        }
        assert!(TaskStatus::parse("running").is_active());
        assert!(!TaskStatus::parse("error").is_active());
        assert!(TaskStatus::parse("error").can_start());
    }
}
