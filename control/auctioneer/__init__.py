"""The auctioneer: places LRP instances and tasks on cells (reference §4). See README.md."""
