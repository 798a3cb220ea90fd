/// Upper bounds on the numbers read from configuration files and the command line that size allocations or
/// loops. They lie far above every published SD1.x/SD2.x/SDXL model, and keep a damaged or hostile value an error
/// that names it instead of a multi-terabyte allocation, a wrapped size or an hour-long loop.
public enum ModelLimits {
    /// Channels of any layer (`block_out_channels`, `hidden_size`, `cross_attention_dim`, ...). SDXL: 2048.
    public static let maximumChannels = 16_384
    /// Feed-forward width of a text encoder (`intermediate_size`). OpenCLIP bigG: 5120.
    public static let maximumIntermediateSize = 65_536
    /// Down blocks of a UNet or VAE (each halves the resolution). SD: 4.
    public static let maximumBlocks = 6
    /// Resnets per block (`layers_per_block`). SD: 2.
    public static let maximumLayersPerBlock = 16
    /// Transformer blocks per attention stage (`transformer_layers_per_block`). SDXL: 10.
    public static let maximumTransformerDepth = 64
    /// Text encoder layers (`num_hidden_layers`). OpenCLIP bigG: 32.
    public static let maximumTextLayers = 128
    /// Text encoder context (`max_position_embeddings`, the tokenizer's `model_max_length`). CLIP: 77.
    public static let maximumContextLength = 4096
    /// Tokenizer / embedding vocabulary (`vocab_size`). CLIP: 49 408.
    public static let maximumVocabulary = 1_000_000
    /// Latent side of `sample_size`. SDXL: 128.
    public static let maximumSampleSize = 512
    /// Image width and height in pixels (`--width`, `--height`).
    public static let maximumImageSide = 4096
    /// Denoising steps of one generation (`--steps`, `--calib-steps`).
    public static let maximumSteps = 1000
    /// `num_train_timesteps` of a scheduler. SD: 1000.
    public static let maximumTrainTimesteps = 100_000
    /// Sinusoidal embedding width (`time_embedding_dim`, `addition_time_embed_dim`, ...).
    public static let maximumEmbeddingWidth = 65_536
}
