//! Kubernetes' WebSocket channel protocol for exec, attach and port-forward streams: the
//! channel numbers, the terminal size message and the final `metav1.Status`, shared by the
//! streaming server and its clients (`rkube crictl`, tests, the kubelet to come).

use serde::{Deserialize, Serialize};

/// The v4 subprotocol: channels 0–4, the status as JSON on channel 3.
pub const V4_PROTOCOL: &str = "v4.channel.k8s.io";
/// The v5 subprotocol: v4 plus [`CLOSE_CHANNEL`] (the client closing stdin).
pub const V5_PROTOCOL: &str = "v5.channel.k8s.io";

/// Bytes for the process's stdin.
pub const STDIN_CHANNEL: u8 = 0;
/// The process's stdout (and the terminal, with a TTY).
pub const STDOUT_CHANNEL: u8 = 1;
/// The process's stderr.
pub const STDERR_CHANNEL: u8 = 2;
/// The final [`Status`] of the stream.
pub const ERROR_CHANNEL: u8 = 3;
/// Terminal size changes ([`TerminalSize`] as JSON).
pub const RESIZE_CHANNEL: u8 = 4;
/// v5: a message `[255, n]` closes channel `n`.
pub const CLOSE_CHANNEL: u8 = 255;

/// A terminal size, as `remotecommand.TerminalSize` spells it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The `metav1.Status` written on [`ERROR_CHANNEL`] when a stream ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Always present, always empty.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `Success` or `Failure`.
    pub status: String,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `NonZeroExitCode` for a command that exited with a code other than 0.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The exit code, as a cause with reason `ExitCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// `metav1.StatusDetails`, the part of it streams use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// The causes; an exit code is `{reason: ExitCode, message: "3"}`.
    #[serde(default)]
    pub causes: Vec<StatusCause>,
}

/// `metav1.StatusCause`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusCause {
    /// Machine-readable reason.
    #[serde(default)]
    pub reason: String,
    /// Its value.
    #[serde(default)]
    pub message: String,
}

fn encode(status: &Status) -> Vec<u8> {
    serde_json::to_vec(status).unwrap_or_default()
}

/// The status of a stream that ended well (exit code 0).
pub fn success() -> Vec<u8> {
    encode(&Status {
        status: "Success".into(),
        ..Status::default()
    })
}

/// The status of a command that exited with `code` (not 0), as upstream writes it.
pub fn exit_code_failure(code: i32) -> Vec<u8> {
    encode(&Status {
        status: "Failure".into(),
        message: format!("command terminated with non-zero exit code: exit status {code}"),
        reason: "NonZeroExitCode".into(),
        details: Some(StatusDetails {
            causes: vec![StatusCause {
                reason: "ExitCode".into(),
                message: code.to_string(),
            }],
        }),
        ..Status::default()
    })
}

/// The status of a stream that failed for `message`.
pub fn failure(message: &str) -> Vec<u8> {
    encode(&Status {
        status: "Failure".into(),
        message: message.to_owned(),
        reason: "InternalError".into(),
        ..Status::default()
    })
}

/// What a client reads from a final status: the exit code, or the failure's message.
pub fn exit_code_of(bytes: &[u8]) -> Result<i32, String> {
    let status: Status = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "unreadable stream status {:?}: {e}",
            String::from_utf8_lossy(bytes)
        )
    })?;
    if status.status == "Success" {
        return Ok(0);
    }
    if status.reason == "NonZeroExitCode" {
        let code = status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .find(|c| c.reason == "ExitCode")
            .and_then(|c| c.message.parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(status.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_to_exit_codes() {
        assert_eq!(exit_code_of(&success()), Ok(0));
        assert_eq!(exit_code_of(&exit_code_failure(3)), Ok(3));
        assert_eq!(
            exit_code_of(&failure("container abc is not running")),
            Err("container abc is not running".to_owned())
        );
        assert!(exit_code_of(b"{").is_err());
    }

    #[test]
    fn the_wire_form_is_upstreams() {
        let v: serde_json::Value = serde_json::from_slice(&exit_code_failure(7)).unwrap();
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "7");
        let size: TerminalSize = serde_json::from_str(r#"{"Width":80,"Height":24}"#).unwrap();
        assert_eq!(
            size,
            TerminalSize {
                width: 80,
                height: 24
            }
        );
    }
}
