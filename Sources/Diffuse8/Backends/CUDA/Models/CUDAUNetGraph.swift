/// `CUDAUNet.forward` captured once as a CUDA graph for fixed input shapes, then replayed: one
/// `cuGraphLaunch` instead of ~1000 kernel launches per evaluation.
///
/// Inputs live at fixed device addresses owned by this object; `forward` copies the caller's tensors there
/// (device to device) and uploads the timestep features, then launches the graph. The returned tensor is the
/// graph's fixed output buffer: it is overwritten by the next `forward` (copy or download it first).
/// Same results as `CUDAUNet.forward` (same kernels, same order). Limitations: shapes fixed at creation;
/// the convolution algorithms and GEMM plans are those chosen during the warm-up run.
public final class CUDAUNetGraph {
    public let unet: CUDAUNet
    private let graph: CUDAGraph
    /// The fixed input buffers the captured forward reads (`CUDASamplingLoop` writes `sample` directly).
    let sample: CUDATensor
    private let encoderHiddenStates: CUDATensor
    private let textEmbeds: CUDATensor?
    let conditioning: CUDAUNet.Conditioning
    public let output: CUDATensor

    /// Warms up (two eager forwards) and captures. `textEmbedsWidth`/`timeIdCount` only for SDXL (text_time).
    public init(_ unet: CUDAUNet, batch: Int, height: Int, width: Int, contextLength: Int,
                textEmbedsWidth: Int? = nil, timeIdCount: Int = 6) throws {
        self.unet = unet
        let context = unet.context
        let c = unet.configuration
        sample = try unet.kernels.empty([batch, c.inChannels, height, width])
        encoderHiddenStates = try unet.kernels.empty([batch, contextLength, c.crossAttentionDim[0]])
        textEmbeds = try textEmbedsWidth.map { try unet.kernels.empty([batch, $0]) }
        try context.poison(sample)
        try context.poison(encoderHiddenStates)
        if let textEmbeds { try context.poison(textEmbeds) }
        let timeIds = c.usesTextTimeEmbedding ? Tensor(zeros: [batch, timeIdCount]) : nil
        conditioning = try unet.conditioning(batch: batch, timestep: 0, timeIds: timeIds)
        let (sample, states, text, inputs) = (sample, encoderHiddenStates, textEmbeds, conditioning)
        // Two eager forwards: the first decides which modules run fused paths (level 4's FP8 attention), the second
        // times the forms that follow from those (its Q/K/V stack writing the attention's codes) outside the capture.
        for _ in 0..<2 { _ = try unet.forward(sample: sample, conditioning: inputs, encoderHiddenStates: states, textEmbeds: text) }
        try context.synchronize()
        let (graph, output) = try CUDAGraph.capture(context) {
            try unet.forward(sample: sample, conditioning: inputs, encoderHiddenStates: states, textEmbeds: text)
        }
        self.graph = graph
        self.output = output
    }

    /// Copies the inputs that stay fixed over a denoising loop into the graph's buffers: the text context, SDXL's
    /// pooled embeddings and the features of its time ids.
    func setConstantInputs(encoderHiddenStates: CUDATensor, textEmbeds: CUDATensor?, timeIds: Tensor?) throws {
        guard encoderHiddenStates.shape == self.encoderHiddenStates.shape, textEmbeds?.shape == self.textEmbeds?.shape else {
            throw CUDAError.invalidArgument("CUDAUNetGraph: captured for states \(self.encoderHiddenStates.shape), text \(self.textEmbeds?.shape ?? []); got \(encoderHiddenStates.shape), \(textEmbeds?.shape ?? [])")
        }
        let context = unet.context
        let features = try unet.conditioning(batch: sample.shape[0], timestep: 0, timeIds: timeIds)
        try context.makeCurrent()
        try context.copy(from: encoderHiddenStates.address, to: self.encoderHiddenStates.address, bytes: encoderHiddenStates.byteCount)
        if let textEmbeds, let fixed = self.textEmbeds { try context.copy(from: textEmbeds.address, to: fixed.address, bytes: textEmbeds.byteCount) }
        if let ids = features.timeIdFeatures, let fixed = conditioning.timeIdFeatures {
            try context.copy(from: ids.address, to: fixed.address, bytes: ids.byteCount)
        }
        try context.synchronize()  // `features` is freed on return
    }

    /// Queues one replay with the timestep features found at `timeFeatures` on the device (copied in first, device to
    /// device, so a whole loop can be queued without the host); the other inputs as last set.
    func launch(timeFeatures: UInt64) throws {
        let context = unet.context
        try context.makeCurrent()
        try context.copy(from: timeFeatures, to: conditioning.timeFeatures.address, bytes: conditioning.timeFeatures.byteCount)
        try graph.launch()
    }

    /// Same contract as `CUDAUNet.forward`, for the shapes given at creation.
    public func forward(sample: CUDATensor, timestep: Float, encoderHiddenStates: CUDATensor,
                        textEmbeds: CUDATensor? = nil, timeIds: Tensor? = nil) throws -> CUDATensor {
        let context = unet.context
        guard sample.shape == self.sample.shape, encoderHiddenStates.shape == self.encoderHiddenStates.shape,
              textEmbeds?.shape == self.textEmbeds?.shape else {
            throw CUDAError.invalidArgument("CUDAUNetGraph: captured for sample \(self.sample.shape), states \(self.encoderHiddenStates.shape), text \(self.textEmbeds?.shape ?? []); got \(sample.shape), \(encoderHiddenStates.shape), \(textEmbeds?.shape ?? [])")
        }
        let fresh = try unet.conditioning(batch: sample.shape[0], timestep: timestep, timeIds: timeIds)
        try context.makeCurrent()
        try context.copy(from: sample.address, to: self.sample.address, bytes: sample.byteCount)
        try context.copy(from: encoderHiddenStates.address, to: self.encoderHiddenStates.address, bytes: encoderHiddenStates.byteCount)
        if let textEmbeds, let fixed = self.textEmbeds { try context.copy(from: textEmbeds.address, to: fixed.address, bytes: textEmbeds.byteCount) }
        try context.copy(from: fresh.timeFeatures.address, to: conditioning.timeFeatures.address, bytes: fresh.timeFeatures.byteCount)
        if let features = fresh.timeIdFeatures, let fixed = conditioning.timeIdFeatures {
            try context.copy(from: features.address, to: fixed.address, bytes: features.byteCount)
        }
        try graph.launch()
        withExtendedLifetime(fresh) {}
        return output
    }
}
