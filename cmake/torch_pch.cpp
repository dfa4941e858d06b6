// Anchor translation unit for the kiln_torch_pch target; the precompiled header is its product.
