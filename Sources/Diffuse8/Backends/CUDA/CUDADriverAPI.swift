/// The CUDA driver API functions we use, resolved from `libcuda.so.1` with `dlsym`.
/// Names with `_v2` are the ABI names `cuda.h` maps the plain names to since CUDA 3.2.
struct CUDADriverAPI {
    typealias Handle = OpaquePointer?
    typealias Result = Int32

    let library: CUDASharedLibrary
    let cuInit: @convention(c) (UInt32) -> Result
    let cuDriverGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
    let cuDeviceTotalMem: @convention(c) (UnsafeMutablePointer<Int>, Int32) -> Result
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<Handle>, Int32) -> Result
    let cuCtxSetCurrent: @convention(c) (Handle) -> Result
    let cuCtxSynchronize: @convention(c) () -> Result
    let cuMemGetInfo: @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Result
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<UInt64>, Int) -> Result
    let cuMemFree: @convention(c) (UInt64) -> Result
    let cuMemcpyHtoDAsync: @convention(c) (UInt64, UnsafeRawPointer, Int, Handle) -> Result
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer, UInt64, Int, Handle) -> Result
    let cuMemcpyDtoDAsync: @convention(c) (UInt64, UInt64, Int, Handle) -> Result
    let cuMemsetD16Async: @convention(c) (UInt64, UInt16, Int, Handle) -> Result
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<Handle>, UInt32) -> Result
    let cuStreamSynchronize: @convention(c) (Handle) -> Result
    let cuStreamDestroy: @convention(c) (Handle) -> Result
    let cuEventCreate: @convention(c) (UnsafeMutablePointer<Handle>, UInt32) -> Result
    let cuEventRecord: @convention(c) (Handle, Handle) -> Result
    let cuEventSynchronize: @convention(c) (Handle) -> Result
    let cuEventQuery: @convention(c) (Handle) -> Result
    let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, Handle, Handle) -> Result
    let cuEventDestroy: @convention(c) (Handle) -> Result
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<Handle>, UnsafeRawPointer) -> Result
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<Handle>, Handle, UnsafePointer<CChar>) -> Result
    let cuFuncSetAttribute: @convention(c) (Handle, Int32, Int32) -> Result
    let cuLaunchKernel: @convention(c) (Handle, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Result
    /// `cuLaunchKernelEx(config, function, params, extra)` with a `CUlaunchConfig` (CUDA 12+; nil on older drivers).
    let cuLaunchKernelEx: (@convention(c) (UnsafeRawPointer, Handle, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                           UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Result)?
    /// CUDA graphs (optional: nil when the driver lacks them).
    let cuStreamBeginCapture: (@convention(c) (Handle, Int32) -> Result)?
    let cuStreamEndCapture: (@convention(c) (Handle, UnsafeMutablePointer<Handle>) -> Result)?
    let cuGraphInstantiateWithFlags: (@convention(c) (UnsafeMutablePointer<Handle>, Handle, UInt64) -> Result)?
    let cuGraphLaunch: (@convention(c) (Handle, Handle) -> Result)?
    let cuGraphExecDestroy: (@convention(c) (Handle) -> Result)?
    let cuGraphDestroy: (@convention(c) (Handle) -> Result)?
    /// TMA descriptors (CUDA 12+; nil on older drivers).
    let cuTensorMapEncodeTiled: (@convention(c) (UnsafeMutableRawPointer, Int32, UInt32, UnsafeMutableRawPointer?,
                                                 UnsafePointer<UInt64>, UnsafePointer<UInt64>, UnsafePointer<UInt32>,
                                                 UnsafePointer<UInt32>, Int32, Int32, Int32, Int32) -> Result)?
    let cuGetErrorName: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
    let cuGetErrorString: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result

    init(_ lib: CUDASharedLibrary) throws {
        library = lib
        cuInit = try lib.function("cuInit")
        cuDriverGetVersion = try lib.function("cuDriverGetVersion")
        cuDeviceGetCount = try lib.function("cuDeviceGetCount")
        cuDeviceGet = try lib.function("cuDeviceGet")
        cuDeviceGetName = try lib.function("cuDeviceGetName")
        cuDeviceGetAttribute = try lib.function("cuDeviceGetAttribute")
        cuDeviceTotalMem = try lib.function("cuDeviceTotalMem_v2")
        cuDevicePrimaryCtxRetain = try lib.function("cuDevicePrimaryCtxRetain")
        cuCtxSetCurrent = try lib.function("cuCtxSetCurrent")
        cuCtxSynchronize = try lib.function("cuCtxSynchronize")
        cuMemGetInfo = try lib.function("cuMemGetInfo_v2")
        cuMemAlloc = try lib.function("cuMemAlloc_v2")
        cuMemFree = try lib.function("cuMemFree_v2")
        cuMemcpyHtoDAsync = try lib.function("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try lib.function("cuMemcpyDtoHAsync_v2")
        cuMemcpyDtoDAsync = try lib.function("cuMemcpyDtoDAsync_v2")
        cuMemsetD16Async = try lib.function("cuMemsetD16Async")
        cuStreamCreate = try lib.function("cuStreamCreate")
        cuStreamSynchronize = try lib.function("cuStreamSynchronize")
        cuStreamDestroy = try lib.function("cuStreamDestroy_v2")
        cuEventCreate = try lib.function("cuEventCreate")
        cuEventRecord = try lib.function("cuEventRecord")
        cuEventSynchronize = try lib.function("cuEventSynchronize")
        cuEventQuery = try lib.function("cuEventQuery")
        cuEventElapsedTime = try lib.function("cuEventElapsedTime_v2", "cuEventElapsedTime")
        cuEventDestroy = try lib.function("cuEventDestroy_v2")
        cuModuleLoadData = try lib.function("cuModuleLoadData")
        cuModuleGetFunction = try lib.function("cuModuleGetFunction")
        cuFuncSetAttribute = try lib.function("cuFuncSetAttribute")
        cuLaunchKernel = try lib.function("cuLaunchKernel")
        cuLaunchKernelEx = lib.optionalFunction("cuLaunchKernelEx")
        cuStreamBeginCapture = lib.optionalFunction("cuStreamBeginCapture_v2")
        cuStreamEndCapture = lib.optionalFunction("cuStreamEndCapture")
        cuGraphInstantiateWithFlags = lib.optionalFunction("cuGraphInstantiateWithFlags")
        cuGraphLaunch = lib.optionalFunction("cuGraphLaunch")
        cuGraphExecDestroy = lib.optionalFunction("cuGraphExecDestroy")
        cuGraphDestroy = lib.optionalFunction("cuGraphDestroy")
        cuTensorMapEncodeTiled = lib.optionalFunction("cuTensorMapEncodeTiled")
        cuGetErrorName = try lib.function("cuGetErrorName")
        cuGetErrorString = try lib.function("cuGetErrorString")
    }

    /// Throws `CUDAError.driver` (named and explained by the driver) unless `result` is CUDA_SUCCESS.
    func check(_ result: Result, _ call: @autoclosure () -> String) throws {
        guard result != 0 else { return }
        var name: UnsafePointer<CChar>? = nil, message: UnsafePointer<CChar>? = nil
        _ = cuGetErrorName(result, &name)
        _ = cuGetErrorString(result, &message)
        throw CUDAError.driver(call: call(), code: result,
                               name: name.map { String(cString: $0) } ?? "CUDA_ERROR_\(result)",
                               message: message.map { String(cString: $0) } ?? "no description")
    }

    /// Device attribute numbers from `CUdevice_attribute`.
    enum Attribute: Int32 {
        case maxThreadsPerBlock = 1
        case multiprocessorCount = 16
        case l2CacheSize = 38
        case computeCapabilityMajor = 75
        case computeCapabilityMinor = 76
        case maxSharedMemoryPerBlockOptin = 97
    }

    static let outOfMemory: Result = 2
    static let funcAttributeMaxDynamicSharedMemory: Int32 = 8
}
