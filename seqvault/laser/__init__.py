"""Helpers behind `seqvault.laser_reader` (import from there): batch containers and padding
(`batch`), time and string features (`features`), the PyTorch impressions dataset (`dataset`).
"""
