//! Kernel and io_uring capability detection. (Stub: being written.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Uring,
    Epoll,
}
impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Uring => "uring",
            BackendKind::Epoll => "epoll",
        })
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendRequest {
    #[default]
    Auto,
    Uring,
    Epoll,
}
#[derive(Debug)]
pub struct Probe {
    pub kernel: String,
    pub backend: BackendKind,
    pub reason: String,
}
pub fn probe() -> &'static Probe {
    static P: std::sync::OnceLock<Probe> = std::sync::OnceLock::new();
    P.get_or_init(|| Probe {
        kernel: String::new(),
        backend: BackendKind::Epoll,
        reason: "stub".into(),
    })
}
pub fn choose(req: BackendRequest, p: &Probe) -> Result<(BackendKind, String), String> {
    match req {
        BackendRequest::Uring => Err("--backend uring: not built".into()),
        BackendRequest::Epoll => Ok((BackendKind::Epoll, "forced by --backend epoll".into())),
        BackendRequest::Auto => Ok((p.backend, p.reason.clone())),
    }
}
impl Probe {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    pub fn to_text(&self) -> String {
        String::new()
    }
}
