/// diffusers' `UNetMidBlock2D` as the VAE builds it (one layer, no time embedding, eps 1e-6):
/// resnets.0 → attentions.0 (when `mid_block_add_attention`) → resnets.1.
public final class VAEMidBlock {
    public let firstResnet: ResnetBlock2D
    public let attention: VAEAttentionBlock?
    public let secondResnet: ResnetBlock2D

    /// Loads `<prefix>.resnets.0`, `.attentions.0`, `.resnets.1`, each checked against `channels`.
    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, groups: Int, addAttention: Bool) throws {
        firstResnet = try loader.resnet(prefix + ".resnets.0", in: channels, out: channels, groups: groups, epsilon: 1e-6)
        attention = addAttention ? try VAEAttentionBlock(loader, prefix + ".attentions.0", channels: channels, groups: groups) : nil
        secondResnet = try loader.resnet(prefix + ".resnets.1", in: channels, out: channels, groups: groups, epsilon: 1e-6)
    }

    var resnets: [ResnetBlock2D] { [firstResnet, secondResnet] }

    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, plan: FusionPlan?) throws -> B.Value {
        var h = try firstResnet.forward(b, x, time: nil)
        if let attention { h = try attention.forward(b, h, plan: plan) }
        return try secondResnet.forward(b, h, time: nil)
    }
}
