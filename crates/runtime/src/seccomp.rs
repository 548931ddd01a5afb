//! Compiling a container's OCI seccomp profile to the classic BPF program the kernel runs.
//!
//! The container's init (`rkube-shim create`, a small static executable) loads a ready program
//! with one `seccomp(2)` call; compiling the profile (syscall names to numbers per
//! architecture, argument comparisons) is libseccomp's work, done here in the runtime, which
//! links it anyway. Programs are kept under `<root>/seccomp/<sha256 of the profile>.bpf`, so
//! the runtime-default profile is compiled once, not per container.
//!
//! The translation follows the OCI runtime spec as runc applies it: rules whose action is the
//! default action are dropped (libseccomp refuses them), syscall names this libseccomp does not
//! know are skipped (the kernel cannot have them either), several comparisons of one argument
//! become separate rules, and no_new_privs is left to the init.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use sha2::{Digest, Sha256};

/// Why a profile could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile asks for something the init cannot do.
    #[error("seccomp profile: {0}")]
    Unsupported(String),
    /// libseccomp refused the profile.
    #[error("seccomp profile: {step}: {source}")]
    Compile {
        /// What was being done.
        step: String,
        /// libseccomp's error.
        source: libseccomp::error::SeccompError,
    },
    /// The compiled program could not be stored.
    #[error("storing the seccomp program {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Returns the compiled program's file under `dir`, compiling it if it is not there yet.
pub fn program(dir: &Path, profile: &LinuxSeccomp) -> Result<PathBuf, SeccompError> {
    let text = serde_json::to_vec(profile)
        .map_err(|e| SeccompError::Unsupported(format!("serializing: {e}")))?;
    let path = dir.join(format!("{}.bpf", hex::encode(Sha256::digest(&text))));
    if path.exists() {
        return Ok(path);
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SeccompError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let context = compile(profile)?;
    // Written whole under a temporary name, then renamed: a concurrent create reads the old
    // complete file or the new one, never a part.
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    context
        .export_bpf(tmp.as_file())
        .map_err(|source| SeccompError::Compile {
            step: "exporting the program".into(),
            source,
        })?;
    tmp.persist(&path).map_err(|e| SeccompError::Io {
        path: path.clone(),
        source: e.error,
    })?;
    Ok(path)
}

fn compile(profile: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    let err = |step: String| move |source| SeccompError::Compile { step, source };
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut context = ScmpFilterContext::new(default).map_err(err("creating the filter".into()))?;
    // The init sets no_new_privs itself when the container asks for it, and only then.
    context
        .set_ctl_nnp(false)
        .map_err(err("leaving no_new_privs to the init".into()))?;
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(SeccompError::Unsupported(
            "filter flags are not supported".into(),
        ));
    }
    if profile.listener_path().is_some() {
        return Err(SeccompError::Unsupported(
            "a notify listener is not supported".into(),
        ));
    }
    for arch in profile.architectures().iter().flatten() {
        context
            .add_arch(scmp_arch(*arch))
            .map_err(err(format!("adding architecture {arch:?}")))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let rule_action = action(rule.action(), rule.errno_ret())?;
        if rule_action == default {
            continue;
        }
        let comparisons: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value()))
            .collect();
        let indexes: HashSet<u32> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| a.index() as u32)
            .collect();
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let step = || format!("adding a rule for {name}");
            if comparisons.is_empty() {
                context
                    .add_rule(rule_action, syscall)
                    .map_err(err(step()))?;
            } else if indexes.len() == comparisons.len() {
                context
                    .add_rule_conditional(rule_action, syscall, &comparisons)
                    .map_err(err(step()))?;
            } else {
                for comparison in &comparisons {
                    context
                        .add_rule_conditional(
                            rule_action,
                            syscall,
                            std::slice::from_ref(comparison),
                        )
                        .map_err(err(step()))?;
                }
            }
        }
    }
    Ok(context)
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(u16::try_from(errno).map_err(|_| {
                SeccompError::Unsupported(format!("trace value {errno} is out of range"))
            })?)
        }
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported(
                "SCMP_ACT_NOTIFY is not supported".into(),
            ));
        }
    })
}

fn op(op: LinuxSeccompOperator, mask: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(mask.unwrap_or(0)),
    }
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles_once_to_whole_instructions() {
        let dir = tempfile::tempdir().unwrap();
        let profile = crate::spec::default_seccomp().unwrap();
        let path = program(dir.path(), &profile).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert!(
            !bytes.is_empty() && bytes.len().is_multiple_of(8),
            "{}",
            bytes.len()
        );
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(program(dir.path(), &profile).unwrap(), path);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), modified);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn notify_actions_are_refused_by_name() {
        let profile = oci_spec::runtime::LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActNotify)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = program(dir.path(), &profile).unwrap_err().to_string();
        assert!(err.contains("SCMP_ACT_NOTIFY"), "{err}");
    }
}
