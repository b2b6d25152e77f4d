"""ECG5000 LSTM autoencoder, d = 64 (METHOD §5): 249,473 parameters.

Input and output are ``(N, 140, 1)``. The representation is the second encoder
LSTM's final hidden state ``(N, d)``. There is no input perturbation; the loss
is the mean L1 error.
"""
from __future__ import annotations

from torch import Tensor, nn

from lfx_engine.errors import ParameterError
from lfx_engine.models.base import Autoencoder, check_latent_dim

ECG_LATENT_DIM = 64
ECG_SEQ_LEN = 140


class LSTMEncoder(nn.Module):
    """LSTM(F→2d) → LSTM(2d→d); returns the last layer's final hidden state."""

    def __init__(self, latent_dim: int = ECG_LATENT_DIM, n_features: int = 1) -> None:
        super().__init__()
        check_latent_dim(latent_dim)
        self.lstm1 = nn.LSTM(n_features, 2 * latent_dim, batch_first=True)
        self.lstm2 = nn.LSTM(2 * latent_dim, latent_dim, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        hidden, _ = self.lstm1(x)
        _, (h_n, _) = self.lstm2(hidden)
        return h_n[-1]


class LSTMDecoder(nn.Module):
    """Repeat the latent over time → LSTM(d→d) → LSTM(d→2d) → per-step Linear(2d→F)."""

    def __init__(self, latent_dim: int = ECG_LATENT_DIM, seq_len: int = ECG_SEQ_LEN, n_features: int = 1) -> None:
        super().__init__()
        check_latent_dim(latent_dim)
        self.seq_len = seq_len
        self.lstm1 = nn.LSTM(latent_dim, latent_dim, batch_first=True)
        self.lstm2 = nn.LSTM(latent_dim, 2 * latent_dim, batch_first=True)
        self.out = nn.Linear(2 * latent_dim, n_features)

    def forward(self, z: Tensor) -> Tensor:
        steps = z.unsqueeze(1).expand(-1, self.seq_len, -1)
        hidden, _ = self.lstm1(steps)
        hidden, _ = self.lstm2(hidden)
        return self.out(hidden)


class LSTMAutoencoder(Autoencoder):
    """ECG autoencoder (reconstruction pretext task, L1 loss)."""

    def __init__(self, latent_dim: int = ECG_LATENT_DIM, seq_len: int = ECG_SEQ_LEN, n_features: int = 1) -> None:
        check_latent_dim(latent_dim)
        if seq_len <= 0 or n_features <= 0:
            raise ParameterError(f"seq_len and n_features must be positive, got {seq_len}, {n_features}")
        super().__init__(LSTMEncoder(latent_dim, n_features), LSTMDecoder(latent_dim, seq_len, n_features),
                         latent_dim, pretext="reconstruction", loss="l1")
        self.seq_len = seq_len
