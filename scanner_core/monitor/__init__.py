"""The monitor loop (issue 10): watching repositories, rescans, change notifications."""
