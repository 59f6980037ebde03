"""Text–video retrieval (Side4Video's second task): the frozen text tower, the retrieval head that adds the side
network to each frame's frozen class token, similarity heads (meanP, WTI), the symmetric contrastive loss with a
gradient-keeping all-gather, and the R@K / MdR / MnR metrics. Import the modules directly."""
