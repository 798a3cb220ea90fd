/// A UNet on any backend as the pipeline's `NoisePredictor`, evaluated eagerly step by step: per generation the
/// conditioning is uploaded once; per step the latents go up, the one forward runs, the prediction comes back.
/// Calibration uses it around a `RecordingBackend`; `CUDANoisePredictor` is the fast path (graph replay).
final class BackendNoisePredictor<B: ModelBackend>: NoisePredictor {
    let model: UNet2DConditionModel
    let backend: B
    var configuration: UNetConfiguration { model.configuration }

    init(_ model: UNet2DConditionModel, backend: B) {
        self.model = model
        self.backend = backend
    }

    func makeDenoiser(conditioning c: UNetConditioning, sampleShape: [Int]) throws -> (Tensor, Float) throws -> Tensor {
        let b = backend, model = model
        let states = try b.upload(c.encoderHiddenStates)
        let textEmbeds = try c.textEmbeds.map { try b.upload($0) }
        return { sample, timestep in
            let batch = sample.shape.first ?? 0
            let features = try model.timeFeatures(timesteps: Array(repeating: timestep, count: batch), timeIds: c.timeIds)
            let y = try model.forward(b, sample: b.upload(sample), timeFeatures: b.upload(features.time),
                                      timeIdFeatures: features.timeIds.map { try b.upload($0) },
                                      encoderHiddenStates: states, textEmbeds: textEmbeds)
            return try b.download(y)
        }
    }
}
