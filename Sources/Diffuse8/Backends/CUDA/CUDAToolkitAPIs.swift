/// NVRTC functions, resolved from `libnvrtc.so.{13,12}`.
struct NVRTCAPI {
    typealias Program = OpaquePointer?
    typealias Result = Int32

    let library: CUDASharedLibrary
    let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Result
    let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<Program>, UnsafePointer<CChar>, UnsafePointer<CChar>?,
                                            Int32, UnsafePointer<UnsafePointer<CChar>?>?,
                                            UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    let nvrtcCompileProgram: @convention(c) (Program, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    let nvrtcGetProgramLogSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Result
    let nvrtcGetProgramLog: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Result
    let nvrtcGetCUBINSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Result
    let nvrtcGetCUBIN: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Result
    let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Program>) -> Result
    let nvrtcGetErrorString: @convention(c) (Result) -> UnsafePointer<CChar>?

    init(_ lib: CUDASharedLibrary) throws {
        library = lib
        nvrtcVersion = try lib.function("nvrtcVersion")
        nvrtcCreateProgram = try lib.function("nvrtcCreateProgram")
        nvrtcCompileProgram = try lib.function("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try lib.function("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try lib.function("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try lib.function("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try lib.function("nvrtcGetCUBIN")
        nvrtcDestroyProgram = try lib.function("nvrtcDestroyProgram")
        nvrtcGetErrorString = try lib.function("nvrtcGetErrorString")
    }

    func check(_ result: Result, _ call: String) throws {
        guard result != 0 else { return }
        throw CUDAError.nvrtc(call: call, code: result,
                              message: nvrtcGetErrorString(result).map { String(cString: $0) } ?? "unknown")
    }

    var version: (major: Int, minor: Int) {
        var major: Int32 = 0, minor: Int32 = 0
        _ = nvrtcVersion(&major, &minor)
        return (Int(major), Int(minor))
    }
}

/// cuBLASLt functions, resolved from `libcublasLt.so.{13,12}`. Device pointers are passed as `UInt64`,
/// which the x86-64 and AArch64 C ABIs pass exactly like `void *`.
struct CUBLASLtAPI {
    typealias Handle = OpaquePointer?
    typealias Status = Int32

    let library: CUDASharedLibrary
    let cublasLtCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    let cublasLtGetVersion: @convention(c) () -> Int
    let cublasLtMatmulDescCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, Int32) -> Status
    let cublasLtMatmulDescSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Status
    let cublasLtMatmulDescDestroy: @convention(c) (Handle) -> Status
    let cublasLtMatrixLayoutCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, UInt64, UInt64, Int64) -> Status
    let cublasLtMatrixLayoutSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Status
    let cublasLtMatrixLayoutDestroy: @convention(c) (Handle) -> Status
    let cublasLtMatmulPreferenceCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    let cublasLtMatmulPreferenceSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Status
    let cublasLtMatmulPreferenceDestroy: @convention(c) (Handle) -> Status
    let cublasLtMatmulAlgoGetHeuristic: @convention(c) (Handle, Handle, Handle, Handle, Handle, Handle, Handle, Int32,
                                                        UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Status
    let cublasLtMatmul: @convention(c) (Handle, Handle, UnsafeRawPointer, UInt64, Handle, UInt64, Handle,
                                        UnsafeRawPointer, UInt64, Handle, UInt64, Handle, UnsafeRawPointer?,
                                        UInt64, Int, OpaquePointer?) -> Status

    init(_ lib: CUDASharedLibrary) throws {
        library = lib
        cublasLtCreate = try lib.function("cublasLtCreate")
        cublasLtGetVersion = try lib.function("cublasLtGetVersion")
        cublasLtMatmulDescCreate = try lib.function("cublasLtMatmulDescCreate")
        cublasLtMatmulDescSetAttribute = try lib.function("cublasLtMatmulDescSetAttribute")
        cublasLtMatmulDescDestroy = try lib.function("cublasLtMatmulDescDestroy")
        cublasLtMatrixLayoutCreate = try lib.function("cublasLtMatrixLayoutCreate")
        cublasLtMatrixLayoutSetAttribute = try lib.function("cublasLtMatrixLayoutSetAttribute")
        cublasLtMatrixLayoutDestroy = try lib.function("cublasLtMatrixLayoutDestroy")
        cublasLtMatmulPreferenceCreate = try lib.function("cublasLtMatmulPreferenceCreate")
        cublasLtMatmulPreferenceSetAttribute = try lib.function("cublasLtMatmulPreferenceSetAttribute")
        cublasLtMatmulPreferenceDestroy = try lib.function("cublasLtMatmulPreferenceDestroy")
        cublasLtMatmulAlgoGetHeuristic = try lib.function("cublasLtMatmulAlgoGetHeuristic")
        cublasLtMatmul = try lib.function("cublasLtMatmul")
    }

    func check(_ status: Status, _ call: String, _ detail: @autoclosure () -> String = "") throws {
        guard status != 0 else { return }
        throw CUDAError.cublas(call: call, status: status, detail: detail())
    }

    // Enum values from cublasLt.h / library_types.h.
    static let computeFloat32: Int32 = 68        // CUBLAS_COMPUTE_32F
    static let dataFloat32: Int32 = 0            // CUDA_R_32F
    static let dataFloat16: Int32 = 2            // CUDA_R_16F
    static let dataBFloat16: Int32 = 14          // CUDA_R_16BF
    static let computeInt32: Int32 = 72          // CUBLAS_COMPUTE_32I
    static let dataInt8: Int32 = 3               // CUDA_R_8I
    static let dataInt32: Int32 = 10             // CUDA_R_32I
    static let dataFloat8E4M3: Int32 = 28        // CUDA_R_8F_E4M3
    /// Device pointers to FP32 dequantization scales of FP8 A and B (D = scaleA·scaleB·op(A)·op(B) + …).
    static let descAScalePointer: Int32 = 17, descBScalePointer: Int32 = 18
    static let descTransA: Int32 = 3, descTransB: Int32 = 4, descEpilogue: Int32 = 7, descBiasPointer: Int32 = 8
    static let layoutBatchCount: Int32 = 5, layoutBatchStride: Int32 = 6
    static let preferenceMaxWorkspace: Int32 = 1
    static let epilogueDefault: Int32 = 1, epilogueBias: Int32 = 4, epilogueGELU: Int32 = 32, epilogueGELUBias: Int32 = 36
    /// sizeof(cublasLtMatmulHeuristicResult_t): algo (64) + workspaceSize (8) + state (4) + wavesCount (4) + reserved (16).
    static let heuristicResultSize = 96
}

/// cuDNN's (legacy, still supported in cuDNN 9) convolution API, resolved from `libcudnn.so.9`.
package struct CUDNNAPI {
    typealias Handle = OpaquePointer?
    typealias Status = Int32

    let library: CUDASharedLibrary
    let cudnnGetVersion: @convention(c) () -> Int
    let cudnnGetErrorString: @convention(c) (Status) -> UnsafePointer<CChar>?
    let cudnnCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    let cudnnSetStream: @convention(c) (Handle, OpaquePointer?) -> Status
    let cudnnCreateTensorDescriptor: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    let cudnnSetTensor4dDescriptor: @convention(c) (Handle, Int32, Int32, Int32, Int32, Int32, Int32) -> Status
    let cudnnDestroyTensorDescriptor: @convention(c) (Handle) -> Status
    let cudnnCreateFilterDescriptor: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    /// (desc, dataType, format, k, c, h, w) — note dataType before format, unlike tensors.
    let cudnnSetFilter4dDescriptor: @convention(c) (Handle, Int32, Int32, Int32, Int32, Int32, Int32) -> Status
    let cudnnDestroyFilterDescriptor: @convention(c) (Handle) -> Status
    let cudnnCreateConvolutionDescriptor: @convention(c) (UnsafeMutablePointer<Handle>) -> Status
    let cudnnSetConvolution2dDescriptor: @convention(c) (Handle, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32) -> Status
    let cudnnSetConvolutionMathType: @convention(c) (Handle, Int32) -> Status
    let cudnnDestroyConvolutionDescriptor: @convention(c) (Handle) -> Status
    let cudnnFindConvolutionForwardAlgorithmEx: @convention(c) (Handle, Handle, UInt64, Handle, UInt64, Handle, Handle, UInt64,
                                                                Int32, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer,
                                                                UInt64, Int) -> Status
    let cudnnConvolutionForward: @convention(c) (Handle, UnsafeRawPointer, Handle, UInt64, Handle, UInt64, Handle, Int32,
                                                 UInt64, Int, UnsafeRawPointer, Handle, UInt64) -> Status

    // The graph ("backend") API, used for fused attention (`CUDNNAttention`).
    typealias Descriptor = UnsafeMutableRawPointer?
    let cudnnBackendCreateDescriptor: @convention(c) (Int32, UnsafeMutablePointer<Descriptor>) -> Status
    let cudnnBackendDestroyDescriptor: @convention(c) (Descriptor) -> Status
    let cudnnBackendFinalize: @convention(c) (Descriptor) -> Status
    let cudnnBackendSetAttribute: @convention(c) (Descriptor, Int32, Int32, Int64, UnsafeRawPointer?) -> Status
    let cudnnBackendGetAttribute: @convention(c) (Descriptor, Int32, Int32, Int64, UnsafeMutablePointer<Int64>?,
                                                  UnsafeMutableRawPointer?) -> Status
    let cudnnBackendExecute: @convention(c) (Handle, Descriptor, Descriptor) -> Status
    /// cuDNN ≥ 9.0: the last error's message (more specific than the status string).
    let cudnnGetLastErrorString: (@convention(c) (UnsafeMutablePointer<CChar>, Int) -> Void)?

    init(_ lib: CUDASharedLibrary) throws {
        library = lib
        cudnnGetVersion = try lib.function("cudnnGetVersion")
        cudnnGetErrorString = try lib.function("cudnnGetErrorString")
        cudnnCreate = try lib.function("cudnnCreate")
        cudnnSetStream = try lib.function("cudnnSetStream")
        cudnnCreateTensorDescriptor = try lib.function("cudnnCreateTensorDescriptor")
        cudnnSetTensor4dDescriptor = try lib.function("cudnnSetTensor4dDescriptor")
        cudnnDestroyTensorDescriptor = try lib.function("cudnnDestroyTensorDescriptor")
        cudnnCreateFilterDescriptor = try lib.function("cudnnCreateFilterDescriptor")
        cudnnSetFilter4dDescriptor = try lib.function("cudnnSetFilter4dDescriptor")
        cudnnDestroyFilterDescriptor = try lib.function("cudnnDestroyFilterDescriptor")
        cudnnCreateConvolutionDescriptor = try lib.function("cudnnCreateConvolutionDescriptor")
        cudnnSetConvolution2dDescriptor = try lib.function("cudnnSetConvolution2dDescriptor")
        cudnnSetConvolutionMathType = try lib.function("cudnnSetConvolutionMathType")
        cudnnDestroyConvolutionDescriptor = try lib.function("cudnnDestroyConvolutionDescriptor")
        cudnnFindConvolutionForwardAlgorithmEx = try lib.function("cudnnFindConvolutionForwardAlgorithmEx")
        cudnnConvolutionForward = try lib.function("cudnnConvolutionForward")
        cudnnBackendCreateDescriptor = try lib.function("cudnnBackendCreateDescriptor")
        cudnnBackendDestroyDescriptor = try lib.function("cudnnBackendDestroyDescriptor")
        cudnnBackendFinalize = try lib.function("cudnnBackendFinalize")
        cudnnBackendSetAttribute = try lib.function("cudnnBackendSetAttribute")
        cudnnBackendGetAttribute = try lib.function("cudnnBackendGetAttribute")
        cudnnBackendExecute = try lib.function("cudnnBackendExecute")
        cudnnGetLastErrorString = lib.optionalFunction("cudnnGetLastErrorString")
    }

    /// A cuDNN handle whose work goes to `context`'s stream.
    func makeHandle(on context: CUDAContext) throws -> OpaquePointer? {
        try context.makeCurrent()
        var handle: OpaquePointer? = nil
        try check(cudnnCreate(&handle), "cudnnCreate")
        try check(cudnnSetStream(handle, context.stream.handle), "cudnnSetStream")
        return handle
    }

    func check(_ status: Status, _ call: String) throws {
        guard status != 0 else { return }
        var message = cudnnGetErrorString(status).map { String(cString: $0) } ?? "status \(status)"
        if let cudnnGetLastErrorString {
            var buffer = [CChar](repeating: 0, count: 1024)
            cudnnGetLastErrorString(&buffer, buffer.count)
            let detail = String(cString: buffer)
            if !detail.isEmpty { message += ": " + detail }
        }
        throw CUDAError.cudnn(call: call, status: status, message: message)
    }

    // Enum values from cudnn_graph.h / cudnn_cnn.h.
    static let formatNCHW: Int32 = 0
    static let formatNHWC: Int32 = 1
    static let dataFloat32: Int32 = 0, dataFloat16: Int32 = 2, dataBFloat16: Int32 = 9
    static let crossCorrelation: Int32 = 1
    static let tensorOpMath: Int32 = 1
    /// sizeof(cudnnConvolutionFwdAlgoPerf_t): algo, status, time, (pad), memory (size_t), determinism, mathType, reserved[3].
    static let algoPerfSize = 48
}
