"""tiny-janus' windowed VQ encoding (Arch.vq_window): each token's code sees only its own neighbourhood, where the
whole-image encoder lets a shape anywhere move every code (GroupNorm statistics and attention are image-wide)."""
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ttrl.zoo.tiny_janus_train import encode_z, pixels, vq_forward


def tiny_vq():
    from transformers import JanusVQVAE, JanusVQVAEConfig

    torch.manual_seed(0)
    cfg = JanusVQVAEConfig(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32,
                           channel_multiplier=[1, 1, 2, 2], num_res_blocks=1, num_patches=4, projection_dim=32,
                           image_token_embed_dim=32, num_hidden_layers=2)
    return JanusVQVAE(cfg).eval()


def scene(extra: bool):
    im = Image.new("RGB", (32, 32), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.rectangle((1, 1, 6, 6), fill=(255, 0, 0))  # in the top-left patch
    if extra:
        d.ellipse((24, 24, 31, 31), fill=(0, 0, 255))  # the bottom-right patch, 3 patches away
    return im


@torch.no_grad()
def test_a_far_shape_moves_whole_image_codes_but_not_windowed_ones():
    vq = tiny_vq()
    x = pixels([scene(False), scene(True)])
    whole, local = encode_z(vq, x, 0), encode_z(vq, x, 24)
    assert whole.shape == local.shape == (2, 8, 4, 4)
    assert (whole[0, :, 0, 0] - whole[1, :, 0, 0]).abs().max() > 1e-3  # image-wide statistics reach the corner
    assert (local[0, :, 0, 0] - local[1, :, 0, 0]).abs().max() < 1e-5  # 24 px windows: the far shape is unseen
    assert (local[0, :, 3, 3] - local[1, :, 3, 3]).abs().max() > 1e-3  # the changed patch itself does change


@torch.no_grad()
def test_blank_windows_encoded_once_equal_encoding_every_window():
    vq = tiny_vq()
    x = pixels([scene(True), Image.new("RGB", (32, 32), (255, 255, 255)), Image.new("RGB", (32, 32), (0, 200, 0))])
    win = F.pad(x, (8,) * 4, value=1.0).unfold(2, 24, 8).unfold(3, 24, 8).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 24, 24)
    every = F.normalize(vq.quant_conv(vq.encoder(win))[:, :, 1, 1], dim=1).view(3, 4, 4, -1).permute(0, 3, 1, 2)
    assert torch.allclose(encode_z(vq, x, 24), every, atol=1e-5)
    assert torch.allclose(encode_z(vq, x[2:], 24), every[2:], atol=1e-5)  # no blank window at all
    _, _, tokens, _ = vq_forward(vq, x, window=24)
    assert len(set(tokens[1].tolist())) == 1  # a blank image is one code everywhere


@torch.no_grad()
def test_a_built_folder_carries_its_window_to_whoever_encodes_with_it(tmp_path):
    from transformers import JanusConfig, JanusVQVAE

    from ttrl.zoo.tiny_janus import Arch, janus_config, tokenizer_and_processor

    arch = Arch(image_size=32, codebook=64, text_layers=1, vq_window=24)
    janus_config(arch, tokenizer_and_processor(arch)[0]).save_pretrained(tmp_path)
    loaded = JanusConfig.from_pretrained(tmp_path).vq_config
    assert loaded.encode_window == 24
    torch.manual_seed(0)
    vq = JanusVQVAE(loaded).eval()
    x = pixels([scene(True)])
    assert torch.equal(encode_z(vq, x), encode_z(vq, x, 24))
    assert not torch.allclose(encode_z(vq, x), encode_z(vq, x, 0), atol=1e-3)
