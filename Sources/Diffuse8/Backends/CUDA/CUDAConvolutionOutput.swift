/// What becomes of an 8-bit convolution's channels-last result in the pass that transposes it back to NCHW
/// (`CUDAKernels.tokensToChannels(_:height:width:_:)`): the operation that follows the convolution in a resnet.
package enum CUDAConvolutionOutput {
    /// The NCHW result.
    case channels
    /// Plus rows[image, offset + c] per image and channel (a resnet's conv1 and its time embedding).
    case addingChannelVector(CUDATensor, offset: Int)
    /// (residual + result + bias[c]) · scale (a resnet's conv2 and its output; bias: the conv2 and shortcut biases a
    /// fusion plan folded out).
    case addingResidual(CUDATensor, bias: CUDATensor?, scale: Float)

    var isChannelVector: Bool { if case .addingChannelVector = self { true } else { false } }
}
