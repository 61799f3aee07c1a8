// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BitcoinTx} from "../BitcoinTx.sol";

/// @title BitcoinTxHarness
/// @notice Test only: exposes the BitcoinTx library so tests compare it with the Python reference.
contract BitcoinTxHarness {
    /// @notice BitcoinTx.classifyTag: status 0 = not a tag, 1 = malformed, 2 = valid.
    function classifyTag(bytes calldata spk) external pure returns (uint8 status, uint8 kind, address recipient) {
        BitcoinTx.TagStatus s;
        (s, kind, recipient) = BitcoinTx.classifyTag(spk);
        return (uint8(s), kind, recipient);
    }

    /// @notice BitcoinTx.parseDeposit, flattened.
    function parseDeposit(bytes calldata rawTx, bytes calldata federationScript, uint256 selected)
        external
        pure
        returns (BitcoinTx.Deposit memory)
    {
        return BitcoinTx.parseDeposit(rawTx, keccak256(federationScript), selected);
    }

    /// @notice BitcoinTx.isStandardScript.
    function isStandardScript(bytes calldata script) external pure returns (bool) {
        return BitcoinTx.isStandardScript(script);
    }
}
