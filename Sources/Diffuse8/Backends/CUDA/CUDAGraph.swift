/// A CUDA graph captured from the context's stream (`cuStreamBeginCapture` in relaxed mode →
/// `cuStreamEndCapture` → `cuGraphInstantiateWithFlags`), replayed with `cuGraphLaunch`.
///
/// Every device buffer the captured work allocated is kept for the graph's lifetime (it replays on the same
/// addresses): buffers the work freed are taken out of the allocator's free lists (`CUDAMemoryPool.endCapture`),
/// the rest are whatever the caller keeps (`retained`). Capture needs everything warmed up first: kernels
/// compiled, GEMM plans and convolution algorithms chosen (those synchronise, which capture forbids).
public final class CUDAGraph: @unchecked Sendable {
    let context: CUDAContext
    private var graph: OpaquePointer?
    private var executable: OpaquePointer?
    /// Buffers the graph reads or writes that nobody else holds.
    private let owned: [CUDABuffer]
    /// Anything else the graph must keep alive (outputs, fixed inputs).
    public var retained: [Any] = []

    /// Captures `body`'s stream work. Returns the graph and `body`'s result.
    public static func capture<T>(_ context: CUDAContext, _ body: () throws -> T) throws -> (CUDAGraph, T) {
        let driver = context.driver
        guard let begin = driver.cuStreamBeginCapture, let end = driver.cuStreamEndCapture,
              let instantiate = driver.cuGraphInstantiateWithFlags, driver.cuGraphLaunch != nil else {
            throw CUDAError.invalidArgument("CUDA graphs: the driver (\(driver.library.path)) lacks cuStreamBeginCapture_v2/cuGraphLaunch")
        }
        try context.synchronize()
        context.allocator.beginCapture()
        try driver.check(begin(context.stream.handle, 2 /* CU_STREAM_CAPTURE_MODE_RELAXED */), "cuStreamBeginCapture")
        let result: T
        do {
            result = try body()
        } catch {
            var discarded: OpaquePointer? = nil
            _ = end(context.stream.handle, &discarded)
            if let discarded { _ = driver.cuGraphDestroy?(discarded) }
            for b in context.allocator.endCapture() { context.allocator.recycle(address: b.address, byteCount: b.byteCount) }
            throw error
        }
        var graph: OpaquePointer? = nil
        let endResult = end(context.stream.handle, &graph)
        let owned = context.allocator.endCapture().map { CUDABuffer(address: $0.address, byteCount: $0.byteCount, pool: context.allocator) }
        try driver.check(endResult, "cuStreamEndCapture")
        var executable: OpaquePointer? = nil
        try driver.check(instantiate(&executable, graph, 0), "cuGraphInstantiateWithFlags")
        return (CUDAGraph(context: context, graph: graph, executable: executable, owned: owned), result)
    }

    private init(context: CUDAContext, graph: OpaquePointer?, executable: OpaquePointer?, owned: [CUDABuffer]) {
        self.context = context
        self.graph = graph
        self.executable = executable
        self.owned = owned
    }

    /// Queues one replay on the context's stream.
    public func launch() throws {
        try context.makeCurrent()
        try context.driver.check(context.driver.cuGraphLaunch!(executable, context.stream.handle), "cuGraphLaunch")
    }

    deinit {
        _ = try? context.synchronize()
        if let executable { _ = context.driver.cuGraphExecDestroy?(executable) }
        if let graph { _ = context.driver.cuGraphDestroy?(graph) }
    }
}
