"""Splicing vision embeddings into the token embeddings, with visual-prompt boolean indexing.

The rule (the Sa2VA seed): the ``<IMG_CONTEXT>`` positions of the batch, in row-major order
(sample, then position), receive

* for every kept tile (``image_flags == 1``), in ``pixel_values`` order, its ``n_tok`` (256)
  projected ViT rows;
* right after a tile marked in ``vp_overall_mask``, for each of its objects in order, the rows
  of that tile selected by the object's 16 x 16 prompt mask
  (``tile.repeat(n_obj)[prompt_masks.reshape(n_obj, 256)]``).

With the thumbnail as last tile of a sample, the object rows follow all the image blocks of
that sample, matching the ``region{i}<vp>`` + ``<IMG_CONTEXT>`` x count_i + ``</vp>`` text.
Counts must agree per sample; a mismatch raises (never repeat or truncate silently).
"""
from typing import List, Optional, Sequence

import torch


def visual_prompt_rows(tile_embeds: torch.Tensor, prompt_masks: torch.Tensor) -> torch.Tensor:
    """Rows of one tile selected by its objects' prompt masks.

    Args:
        tile_embeds: ``(n_tok, D)`` projected features of the prompted tile (n_tok = 256).
        prompt_masks: ``(n_obj, g, g)`` bool (or 0/1 integer) with ``g * g == n_tok``.

    Returns:
        ``(sum(prompt_masks), D)``: object 0's selected rows (row-major grid order), then
        object 1's, ... Same dtype/device as ``tile_embeds``.
    """
    n_tok = tile_embeds.shape[0]
    masks = prompt_masks.to(device=tile_embeds.device).bool().reshape(prompt_masks.shape[0], -1)
    if masks.shape[1] != n_tok:
        raise ValueError(f'prompt mask has {masks.shape[1]} cells per object but the tile has '
                         f'{n_tok} vision tokens')
    n_obj = masks.shape[0]
    return tile_embeds.unsqueeze(0).expand(n_obj, -1, -1)[masks]


def _vision_chunks(vit_embeds: Sequence[torch.Tensor], image_flags: torch.Tensor,
                   vp_overall_mask: Optional[torch.Tensor],
                   prompt_masks: Optional[Sequence[torch.Tensor]]) -> List[torch.Tensor]:
    """Ordered blocks of vision rows: one per kept tile, one per prompted tile's objects."""
    n_tiles = len(vit_embeds)
    flags = image_flags.reshape(-1).to(vit_embeds[0].device)
    if flags.numel() != n_tiles:
        raise ValueError(f'image_flags has {flags.numel()} entries for {n_tiles} tiles')
    keep = flags == 1
    if vp_overall_mask is None:
        if prompt_masks:
            raise ValueError(f'{len(prompt_masks)} prompt_masks given without vp_overall_mask')
        vp = torch.zeros(n_tiles, dtype=torch.bool)
    else:
        vp = vp_overall_mask.reshape(-1).bool().cpu()
        if vp.numel() != n_tiles:
            raise ValueError(f'vp_overall_mask has {vp.numel()} entries for {n_tiles} tiles')
        dropped_vp = torch.nonzero(vp & ~keep.cpu()).flatten().tolist()
        if dropped_vp:
            raise ValueError(f'tiles {dropped_vp} carry a visual prompt but have image_flags 0')
    n_prompts = len(prompt_masks) if prompt_masks is not None else 0
    if int(vp.sum()) != n_prompts:
        raise ValueError(f'vp_overall_mask marks {int(vp.sum())} tiles but {n_prompts} '
                         f'prompt_masks tensors were given')
    chunks: List[torch.Tensor] = []
    i_prompt = 0
    keep_list = keep.cpu().tolist()
    for i in range(n_tiles):
        if not keep_list[i]:
            continue
        chunks.append(vit_embeds[i])
        if vp[i]:
            chunks.append(visual_prompt_rows(vit_embeds[i], prompt_masks[i_prompt]))
            i_prompt += 1
    return chunks


def _check_sample_counts(chunk_sizes: List[int], ctx_counts: List[int],
                         token: str = '<IMG_CONTEXT>') -> None:
    """Walk the vision blocks sample by sample; raise where a sample's count does not line up."""
    pos = 0
    for b, n_ctx in enumerate(ctx_counts):
        got = 0
        last = b == len(ctx_counts) - 1
        while pos < len(chunk_sizes) and (got < n_ctx or (chunk_sizes[pos] == 0 and got == n_ctx)):
            got += chunk_sizes[pos]
            pos += 1
        if last:
            got += sum(chunk_sizes[pos:])
            pos = len(chunk_sizes)
        if got != n_ctx:
            raise ValueError(
                f'sample {b}: {n_ctx} {token} positions but the vision features in batch '
                f'order give it {got} rows (tiles with image_flags 1 contribute their tokens each, '
                f'prompted tiles add sum(prompt_masks) rows); check tile order, image_flags, '
                f'vp_overall_mask and the <vp> block counts')


def merge_vision_embeddings(input_embeds: torch.Tensor,
                            input_ids: torch.Tensor,
                            vit_embeds: Optional[torch.Tensor],
                            image_flags: Optional[torch.Tensor],
                            img_context_token_id: int,
                            vp_overall_mask: Optional[torch.Tensor] = None,
                            prompt_masks: Optional[Sequence[torch.Tensor]] = None,
                            context_token: str = '<IMG_CONTEXT>') -> torch.Tensor:
    """Put vision rows at the ``<IMG_CONTEXT>`` positions.

    Args:
        input_embeds: ``(B, T, D)`` float token embeddings.
        input_ids: ``(B, T)`` long.
        vit_embeds: ``(N_tiles, n_tok, D)`` projected features of every tile in batch order
            (tiles of sample 0 first), or None when the batch has no images; or a sequence
            of ``(n_tok_i, D)`` blocks, one per image, when images have different token
            counts (Qwen-VL dynamic grids: ``n_tok_i = gh_i * gw_i`` merged tokens).
        image_flags: ``(N_tiles,)`` or ``(N_tiles, 1)`` long; tiles with a value other than 1
            (dummy tiles of text-only samples) are skipped. None means all ones.
        img_context_token_id: id of ``<IMG_CONTEXT>``.
        vp_overall_mask: ``(N_tiles,)`` bool, True for the tile carrying a visual prompt.
        prompt_masks: one ``(n_obj, g, g)`` bool tensor per True entry of ``vp_overall_mask``,
            in tile order (``g * g == n_tok``; ``(n_obj, gh_i, gw_i)`` on a dynamic grid).
        context_token: the context token's string, for error messages
            (``'<|image_pad|>'`` on Qwen-VL).

    Returns:
        ``(B, T, D)`` tensor (new, autograd-connected to both inputs), ``input_embeds`` dtype.

    Raises:
        ValueError: naming the sample and both counts when a sample's ``<IMG_CONTEXT>`` count
        differs from its vision rows, or when flags / masks do not match the tiles.
    """
    if input_ids.shape != input_embeds.shape[:2]:
        raise ValueError(f'input_ids {tuple(input_ids.shape)} does not match input_embeds '
                         f'{tuple(input_embeds.shape)}')
    selected = input_ids == img_context_token_id
    ctx_counts = selected.sum(dim=1).tolist()
    if vit_embeds is None:
        if sum(ctx_counts):
            raise ValueError(f'{sum(ctx_counts)} {context_token} positions (per sample '
                             f'{ctx_counts}) but no pixel_values')
        return input_embeds
    if image_flags is None:
        image_flags = torch.ones(len(vit_embeds), dtype=torch.long, device=vit_embeds[0].device)
    chunks = _vision_chunks(vit_embeds, image_flags, vp_overall_mask, prompt_masks)
    _check_sample_counts([c.shape[0] for c in chunks], ctx_counts, context_token)
    if not chunks:
        return input_embeds
    rows = torch.cat(chunks, dim=0).to(dtype=input_embeds.dtype, device=input_embeds.device)
    return input_embeds.masked_scatter(selected.unsqueeze(-1), rows)
