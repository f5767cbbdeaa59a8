import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmrft.models.tiny import QWEN_SPECIAL_TOKENS, build_tiny


def test_tiny_is_deterministic_and_reloads_offline(tmp_path, tiny_model_dir):
    again = build_tiny(tmp_path / "again", seed=0)
    a = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, local_files_only=True)
    b = AutoModelForImageTextToText.from_pretrained(again, local_files_only=True)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na
    pa, pb = AutoProcessor.from_pretrained(tiny_model_dir), AutoProcessor.from_pretrained(again)
    assert pa.tokenizer.get_vocab() == pb.tokenizer.get_vocab()
    n_params = sum(p.numel() for p in a.parameters())
    assert 3e5 < n_params < 2e6  # "about 0.6 M" class of model


def test_tiny_has_qwen_tokens_and_template(tiny_model_dir):
    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    tok = proc.tokenizer
    for t in QWEN_SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(t) is not None
        assert tok.tokenize(t) == [t]  # never split
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape?"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What shape?<|im_end|>\n<|im_start|>assistant\n"
    )
    cfg = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).config
    assert cfg.model_type == "qwen2_5_vl"
    assert cfg.vision_config.patch_size == 14 and cfg.vision_config.spatial_merge_size == 2
    assert cfg.vision_config.temporal_patch_size == 2
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")


def test_tokenizer_round_trips_answers(tiny_model_dir):
    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    for s in ["<answer>triangle</answer>", '{"bbox_2d": [12, 34, 56, 78]}', "12.5s to 17.8s", "ünïcode ✓"]:
        assert tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s
