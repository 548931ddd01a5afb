//! CRI `RuntimeService`: version, status and runtime configuration today. Sandboxes and
//! containers are not implemented yet, and every call about them says so with gRPC
//! `Unimplemented` (the kubelet and crictl show that message), never a fake success.

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

/// The CRI API version this runtime speaks.
pub const RUNTIME_API_VERSION: &str = "v1";
/// The runtime's name in `Version`.
pub const RUNTIME_NAME: &str = "rkube";

/// The `RuntimeService` implementation.
#[derive(Default)]
pub struct Runtime {}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not implemented by rkube's runtime yet (images are; sandboxes and containers are coming)"
    ))
}

/// Implements RPCs that are not there yet, each answering `Unimplemented` with its name. The
/// methods are written in the shape `async_trait` gives trait methods, because the attribute on
/// the impl block sees this macro before it is expanded.
macro_rules! not_implemented {
    ($($method:ident($request:ident) -> $response:ident: $what:literal;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<cri::$request>,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = Result<Response<cri::$response>, Status>>
                        + Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err(not_yet($what)) })
            }
        )*
    };
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        _request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        _request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        // Not ready, truthfully: a kubelet must not schedule pods onto a runtime that cannot run
        // them.
        let condition = |kind: &str, reason: &str, message: &str| cri::RuntimeCondition {
            r#type: kind.into(),
            status: false,
            reason: reason.into(),
            message: message.into(),
        };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    condition(
                        "RuntimeReady",
                        "ContainersNotImplemented",
                        "rkube's runtime serves images; sandboxes and containers are not implemented yet",
                    ),
                    condition(
                        "NetworkReady",
                        "NetworkPluginNotReady",
                        "pod networking is not implemented yet",
                    ),
                ],
            }),
            ..Default::default()
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    type GetContainerEventsStream =
        futures::stream::Empty<Result<cri::ContainerEventResponse, Status>>;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(not_yet("GetContainerEvents"))
    }

    not_implemented! {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse: "RunPodSandbox";
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse: "StopPodSandbox";
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse: "RemovePodSandbox";
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse: "PodSandboxStatus";
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse: "ListPodSandbox";
        create_container(CreateContainerRequest) -> CreateContainerResponse: "CreateContainer";
        start_container(StartContainerRequest) -> StartContainerResponse: "StartContainer";
        stop_container(StopContainerRequest) -> StopContainerResponse: "StopContainer";
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse: "RemoveContainer";
        list_containers(ListContainersRequest) -> ListContainersResponse: "ListContainers";
        container_status(ContainerStatusRequest) -> ContainerStatusResponse: "ContainerStatus";
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse: "UpdateContainerResources";
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse: "ReopenContainerLog";
        exec_sync(ExecSyncRequest) -> ExecSyncResponse: "ExecSync";
        exec(ExecRequest) -> ExecResponse: "Exec";
        attach(AttachRequest) -> AttachResponse: "Attach";
        port_forward(PortForwardRequest) -> PortForwardResponse: "PortForward";
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse: "ContainerStats";
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse: "ListContainerStats";
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse: "PodSandboxStats";
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse: "ListPodSandboxStats";
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse: "UpdateRuntimeConfig";
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse: "CheckpointContainer";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse: "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse: "ListPodSandboxMetrics";
    }
}
